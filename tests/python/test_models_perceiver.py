"""xattn.models.PerceiverIO against the float64 reference of models_reference.py, written from the
paper: encode / process / decode / forward, with and without input_lens (a row of length 0, a
full-length row, padding holding large junk), outputs and gradients w.r.t. every parameter and
the inputs to 1e-5 of the reference's largest value; a padded batch against each row alone;
checkpoints; bad input."""

import pytest
import torch

from xattn.models import PerceiverIO, load_checkpoint, save_checkpoint

import models_reference as ref
from models_reference import check_against_reference, randn, randomize

CONFIGS = {  # input_dim, num_latents, latent_dim, cross / latent heads, layers, query, output, mlp
    "defaults_widths": (12, 8, 32, 1, 4, 2, None, None, 4.0),
    "wider_queries": (20, 16, 24, 2, 3, 1, 32, 7, 2.0),
    "no_self_layers": (7, 5, 16, 4, 8, 0, 8, 3, 1.5),
    "three_layers": (16, 12, 32, 2, 2, 3, 16, 16, 3.0),
}


KEYS = ["input_dim", "num_latents", "latent_dim", "num_cross_heads", "num_latent_heads",
        "num_self_layers", "query_dim", "output_dim", "mlp_ratio"]


def config_of(name):
    """The full configuration, documented defaults filled in (the reference's input)."""
    config = dict(zip(KEYS, CONFIGS[name]))
    config["query_dim"] = config["query_dim"] or config["latent_dim"]  # the documented defaults
    config["output_dim"] = config["output_dim"] or config["query_dim"]
    return config


def build(name, seed):
    """The module of CONFIGS[name] with random parameters, and its full configuration. The latents
    are drawn N(0, 1), not at their init's 0.02: near-identical latents make near-identical keys
    for the decoder, whose query-side gradients then nearly vanish (all scores of a row alike),
    leaving float32 rounding noise of relative size 1e-5 to 2e-4 in decoder.norm_q's and q_proj's
    gradients (plain float32 torch does the same). Trained latents are not alike."""
    kwargs = {k: v for k, v in zip(KEYS, CONFIGS[name]) if v is not None}
    return randomize(PerceiverIO(**kwargs), seed, tokens=1.0), config_of(name)


def key_biases(names):
    """The cross-attentions' key bias: its gradient is 0 in exact arithmetic (a constant shift of
    every score of a row), see check_against_reference. (The processor's k part of qkv.bias is
    likewise 0, but it shares a tensor with q's and v's, whose gradients set the scale.)"""
    return {n for n in names if n.endswith("attn.k_proj.bias")}


def padded(batch, length, width, lens, seed, junk=1e4):
    """Random inputs ~N(0, 1) whose positions j >= lens[b] hold large junk of both signs."""
    x = randn(batch, length, width, seed=seed)
    junk_values = junk * randn(batch, length, width, seed=seed + 1).sign()
    junk_values += 0.5 * junk * randn(batch, length, width, seed=seed + 2)
    if lens is not None:
        for b, n in enumerate(lens):
            x[b, n:] = junk_values[b, n:]
    return x


LENS_CASES = {"none": (3, 40, None), "ragged": (3, 40, [40, 13, 0]), "one_row": (1, 150, [77])}


@pytest.mark.parametrize("lens_case", LENS_CASES)
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("draw", [0, 1])
def test_perceiver_matches_the_reference(name, lens_case, draw):
    seed = 10 * list(CONFIGS).index(name) + list(LENS_CASES).index(lens_case) + 100 * draw
    module, config = build(name, seed)
    batch, length, lens = LENS_CASES[lens_case]
    inputs = padded(batch, length, config["input_dim"], lens, seed + 100)
    queries = randn(batch, 9, config["query_dim"], seed=seed + 200)
    check_against_reference(
        module, lambda m, x, q: m(x, q, input_lens=lens),
        lambda P, x, q: ref.perceiver(P, config, x, q, lens), [inputs, queries], seed,
        key_biases(module.state_dict()), "PerceiverIO")
    assert module(inputs, queries, lens).shape == (batch, 9, config["output_dim"])


def test_encode_process_decode_match_the_reference_one_by_one():
    module, config = build("wider_queries", 5)
    lens = torch.tensor([30, 1])  # an integer tensor is accepted too
    inputs = padded(2, 30, config["input_dim"], lens.tolist(), 6)
    latents = randn(2, 11, config["latent_dim"], seed=7)  # any number of latents
    queries = randn(2, 4, config["query_dim"], seed=8)
    zero = key_biases(module.state_dict())
    check_against_reference(module, lambda m, x: m.encode(x, lens),
                            lambda P, x: ref.perceiver_encode(P, config, x, lens.tolist()),
                            [inputs], 1, zero, "PerceiverIO.encode")
    check_against_reference(module, lambda m, z: m.process(z),
                            lambda P, z: ref.perceiver_process(P, config, z), [latents], 2, zero,
                            "PerceiverIO.process")
    check_against_reference(module, lambda m, z, q: m.decode(z, q),
                            lambda P, z, q: ref.perceiver_decode(P, config, z, q),
                            [latents, queries], 3, zero, "PerceiverIO.decode")


def test_a_row_of_length_zero_gives_latents_that_saw_no_input():
    """With no key visible the encoder's attention outputs 0, so its residual adds only
    out_proj's bias: the latents are the same whatever the (junk) inputs hold."""
    module, config = build("defaults_widths", 9)
    a = module.encode(padded(1, 10, 12, [0], 1), [0])
    b = module.encode(padded(1, 10, 12, [0], 2, junk=-3e5), [0])
    assert torch.equal(a, b)
    want = ref.perceiver_encode(ref.leaves(module.state_dict()), config,
                                torch.zeros(1, 10, 12, dtype=torch.float64), [0])
    assert (a.double() - want).abs().max().item() <= 1e-5 * want.abs().max().item()


# --- a padded batch and each row alone --------------------------------------------------------

def run_with_grads(module, inputs, queries, lens, cot):
    x = inputs.detach().clone().requires_grad_()
    q = queries.detach().clone().requires_grad_()
    for p in module.parameters():
        p.grad = None
    out = module(x, q, input_lens=lens)
    (out * cot).sum().backward()
    return out.detach(), x.grad, q.grad, {n: p.grad.clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("fill", [None, -1e30, float("nan")])
def test_a_padded_batch_gives_the_same_outputs_as_each_row_alone(fill):
    """Rows of lengths 40 (full), 17, 0 and 1, padded with junk (+-1e4, or -1e30, whose square
    overflows float32, or NaN) against each row alone on its unpadded input: the same outputs and
    input gradients, parameter gradients that are the sum of the rows', and gradients exactly 0
    at the padding. (Not bit for bit: the matrix products block differently per shape.)"""
    module, config = build("wider_queries", 21)
    lens = [40, 17, 0, 1]
    batch, length = len(lens), max(lens)
    inputs = padded(batch, length, config["input_dim"], lens, 22)
    if fill is not None:
        for b, n in enumerate(lens):
            inputs[b, n:] = fill
    queries = randn(batch, 6, config["query_dim"], seed=23)
    cot = randn(batch, 6, config["output_dim"], seed=24)
    out, dx, dq, dparams = run_with_grads(module, inputs, queries, lens, cot)
    assert torch.isfinite(out).all() and torch.isfinite(dx).all()

    def close(got, want):
        return (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()

    summed = {n: torch.zeros_like(g) for n, g in dparams.items()}
    for b, n in enumerate(lens):
        a_out, a_dx, a_dq, a_params = run_with_grads(module, inputs[b:b + 1, :n],
                                                     queries[b:b + 1], None, cot[b:b + 1])
        assert close(out[b], a_out[0]), b
        assert close(dq[b], a_dq[0]), b
        if n:
            assert close(dx[b, :n], a_dx[0]), b
        assert torch.all(dx[b, n:] == 0), b  # exactly: the padding has no effect at all
        for name, g in a_params.items():
            summed[name] += g
    largest = max(g.abs().max().item() for g in summed.values())
    for name, g in dparams.items():
        if name.endswith("k_proj.bias"):  # 0 in exact arithmetic: see key_biases
            assert g.abs().max().item() <= 1e-5 * largest, name
        else:
            assert close(g, summed[name]), name


def test_the_row_alone_of_length_zero_equals_an_empty_input():
    module, config = build("no_self_layers", 31)
    queries = randn(1, 3, config["query_dim"], seed=32)
    empty = module(torch.zeros(1, 0, config["input_dim"]), queries)
    masked = module(padded(1, 6, config["input_dim"], [0], 33), queries, input_lens=[0])
    assert torch.equal(empty, masked)


# --- checkpoints ---------------------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path):
    module, config = build("wider_queries", 41)
    path = str(tmp_path / "perceiver.safetensors")
    save_checkpoint(module, path)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, PerceiverIO) and not loaded.training
    assert loaded.config == module.config
    inputs = padded(2, 25, config["input_dim"], [25, 9], 42)
    queries = randn(2, 5, config["query_dim"], seed=43)
    assert torch.equal(loaded(inputs, queries, [25, 9]), module(inputs, queries, [25, 9]))


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(latent_dim=30, num_cross_heads=4), "num_cross_heads"),
    (dict(query_dim=18, num_cross_heads=4), "num_cross_heads"),
    (dict(num_latent_heads=5), "num_latent_heads"),
    (dict(input_dim=0), "input_dim"),
    (dict(num_latents=2.5), "num_latents"),
    (dict(output_dim=-1), "output_dim"),
    (dict(num_self_layers=-1), "num_self_layers"),
])
def test_bad_construction_names_the_argument(kwargs, match):
    args = dict(input_dim=8, num_latents=4, latent_dim=16, num_cross_heads=2,
                num_latent_heads=4, num_self_layers=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PerceiverIO(**args)


X, Q = torch.zeros(2, 10, 8), torch.zeros(2, 3, 12)


@pytest.mark.parametrize("args,kwargs,err,match", [
    ((torch.zeros(2, 10, 9), Q), {}, ValueError, r"inputs: expected \[batch, length, 8\]"),
    ((torch.zeros(10, 8), Q), {}, ValueError, "inputs: expected"),
    ((torch.zeros(1, 2, 10, 8), Q), {}, ValueError, "inputs: expected"),
    (([[0.0] * 8], Q), {}, TypeError, "inputs"),
    ((X, torch.zeros(2, 3, 16)), {}, ValueError, r"queries: expected \[batch, length, 12\]"),
    ((X, torch.zeros(3, 12)), {}, ValueError, "queries: expected"),
    ((X, torch.zeros(3, 3, 12)), {}, ValueError, "queries: expected batch 2, got 3"),
    ((X, "q"), {}, TypeError, "queries"),
    ((X, Q), dict(input_lens=[10]), ValueError, "input_lens: expected 2 lengths"),
    ((X, Q), dict(input_lens=[10, 4, 4]), ValueError, "input_lens: expected 2 lengths"),
    ((X, Q), dict(input_lens=[10, 11]), ValueError, r"input_lens\[1\] = 11 is out of range"),
    ((X, Q), dict(input_lens=[-1, 3]), ValueError, r"input_lens\[0\] = -1 is out of range"),
    ((X, Q), dict(input_lens=[2.0, 3]), TypeError, r"input_lens\[0\]: expected an int"),
    ((X, Q), dict(input_lens=[True, 3]), TypeError, r"input_lens\[0\]: expected an int"),
    ((X, Q), dict(input_lens=7), TypeError, "input_lens: expected a sequence"),
    ((X, Q), dict(input_lens=torch.tensor([2.0, 3.0])), TypeError, "input_lens: expected a 1-D"),
    ((X, Q), dict(input_lens=torch.tensor([[2, 3]])), TypeError, "input_lens: expected a 1-D"),
    ((X, Q), dict(input_lens=torch.tensor([2, 11])), ValueError, r"input_lens\[1\] = 11"),
])
def test_bad_forward_input_names_the_argument(args, kwargs, err, match):
    module = PerceiverIO(input_dim=8, num_latents=4, latent_dim=16, num_cross_heads=2,
                         num_latent_heads=4, num_self_layers=1, query_dim=12)
    saved = {n: t.clone() for n, t in module.state_dict().items()}
    with pytest.raises(err, match=match):
        module(*args, **kwargs)
    assert all(torch.equal(saved[n], t) for n, t in module.state_dict().items())


@pytest.mark.parametrize("call,err,match", [
    (lambda m: m.encode(torch.zeros(2, 5, 7)), ValueError, "inputs: expected"),
    (lambda m: m.encode(torch.zeros(2, 5, 8), input_lens=[1]), ValueError, "input_lens"),
    (lambda m: m.process(torch.zeros(2, 4, 12)), ValueError, r"latents: expected \[batch"),
    (lambda m: m.process(None), TypeError, "latents"),
    (lambda m: m.decode(torch.zeros(2, 4, 12), Q), ValueError, "latents: expected"),
    (lambda m: m.decode(torch.zeros(2, 4, 16), torch.zeros(2, 3, 16)), ValueError,
     "queries: expected"),
    (lambda m: m.decode(torch.zeros(2, 4, 16), torch.zeros(1, 3, 12)), ValueError,
     "queries: expected batch 2"),
])
def test_bad_stage_input_names_the_argument(call, err, match):
    module = PerceiverIO(input_dim=8, num_latents=4, latent_dim=16, num_cross_heads=2,
                         num_latent_heads=4, num_self_layers=1, query_dim=12)
    saved = {n: t.clone() for n, t in module.state_dict().items()}
    with pytest.raises(err, match=match):
        call(module)
    assert all(torch.equal(saved[n], t) for n, t in module.state_dict().items())
