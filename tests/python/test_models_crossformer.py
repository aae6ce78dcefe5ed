"""xattn.models' CrossFormer modules (CrossScaleEmbedding, DynamicPositionBias, LSDA,
CrossFormerBlock, CrossFormer) against the float64 references of crossformer_reference.py, written
from the paper and the official code's definitions: outputs, and gradients w.r.t. every parameter
and the inputs, to 1e-5 of the reference's largest value; checkpoints; bad input.

Widths are chosen so that the position MLP is at least 3 wide (an LSDA of width >= 48): with
pos_dim 1 or 2 its LayerNorms flatten their input to (almost) a constant, so pos_proj's gradient
is 0 or rounding noise, which no relative yardstick can measure (test_tiny_position_mlp covers
pos_dim 1, whose dead parameters have exactly zero gradient).
"""

import copy

import pytest
import torch

from xattn.models import (LSDA, CrossFormer, CrossFormerBlock, CrossScaleEmbedding,
                          DynamicPositionBias, load_checkpoint, save_checkpoint)

import crossformer_reference as ref
from models_reference import REL, _rel, check_against_reference, leaves, randn, randomize


class GivenBias(torch.nn.Module):
    """Stands in for an LSDA's DynamicPositionBias in the gradient checks, returning `value`, a
    test input. Why: the DPB's parameter gradients are its bias gradient dB (whose rows sum to 0,
    since the softmax ignores a constant) weighted by the MLP's features, which are far from
    centred; so dB's float32 rounding, within 3e-7 of max|dB| (the kernel's as plain torch's), is
    amplified in them past 1e-5 (plain float32 torch's too: 1.4e-5 in pos3.0.weight in one case
    we measured), and pos3.2.bias's gradient is 0 in exact arithmetic. They are checked in two
    parts instead: dB, as the gradient of this input, here; DPB's own backward from a given
    cotangent in test_dynamic_position_bias_pair_by_pair."""

    def __init__(self):
        super().__init__()
        self.value = None

    def forward(self, group_h, group_w):
        assert self.value.shape[1] == group_h * group_w
        return self.value


def check_with_given_biases(module, run, run_ref, inputs, seed, label):
    """run(module, *inputs) against run_ref(P, *inputs64, given): the forward with the module's
    own DPBs (given=None), then outputs and gradients with each LSDA's DPB replaced by the bias it
    gave, as an input (given: those biases, in call order)."""
    with torch.no_grad():
        got = run(module, *inputs)
        want = run_ref(leaves(module.state_dict()), *[x.double() for x in inputs], None)
    assert _rel(got, want) <= REL, f"{label} forward with DPB: {_rel(got, want):.2e}"
    attns = [m for m in module.modules() if isinstance(m, LSDA) and m.pos is not None]
    biases = []
    hooks = [a.pos.register_forward_hook(lambda m, i, o: biases.append(o.detach()))
             for a in attns]
    with torch.no_grad():
        run(module, *inputs)
    for h in hooks:
        h.remove()
    assert len(biases) == len(attns)
    for a in attns:
        a.pos = GivenBias()
    n = len(inputs)

    def run_given(m, *xs):
        for a, b in zip(attns, xs[n:]):
            a.pos.value = b
        return run(m, *xs[:n])
    check_against_reference(module, run_given,
                            lambda P, *xs: run_ref(P, *xs[:n], list(xs[n:])),
                            list(inputs) + biases, seed, (), label)


# --- CrossScaleEmbedding --------------------------------------------------------------------------

CEL_CASES = {  # in_channels, dim, kernels, stride, map H x W
    "patch_embed": (3, 32, [4, 8, 16, 32], 4, (16, 24)),
    "merge": (8, 16, [2, 4], 2, (6, 4)),
    "one_kernel": (5, 12, [3], 1, (5, 7)),
    "odd_kernels": (4, 24, [3, 5, 7], 1, (4, 6)),
}


@pytest.mark.parametrize("case", CEL_CASES)
@pytest.mark.parametrize("where", ["after", "before"])
@pytest.mark.parametrize("tokens", [False, True])
def test_cross_scale_embedding(case, where, tokens):
    chans, dim, kernels, stride, (H, W) = CEL_CASES[case]
    seed = list(CEL_CASES).index(case) + 10 * (where == "before") + 20 * tokens
    module = randomize(CrossScaleEmbedding(chans, dim, kernels, stride, where), seed)
    images = randn(2, chans, H, W, seed=seed + 1)
    if tokens:
        x = images.permute(0, 2, 3, 1).reshape(2, H * W, chans)
        run = lambda m, t: m.forward_tokens(t, H, W)  # noqa: E731
        run_ref = lambda P, t: ref.cross_scale_embedding(  # noqa: E731
            P, "", ref.tokens_to_images(t, H, W), kernels, stride, where)[0]
    else:
        x = images
        run = lambda m, t: m(t)  # noqa: E731
        run_ref = lambda P, t: ref.cross_scale_embedding(P, "", t, kernels, stride, where)[0]
    check_against_reference(module, run, run_ref, [x], seed, (), f"CrossScaleEmbedding {case}")
    out_h, out_w = module.output_size(H, W)
    assert run(module, x).shape == (2, out_h * out_w, dim)


def test_cross_scale_embedding_widths_are_the_official_ones():
    widths = lambda m: [p.out_channels for p in m.projs]  # noqa: E731
    assert widths(CrossScaleEmbedding(3, 96, [4, 8, 16, 32], 4)) == [48, 24, 12, 12]
    assert widths(CrossScaleEmbedding(96, 192, [2, 4], 2, "before")) == [96, 96]
    assert CrossScaleEmbedding(3, 96, [4, 8, 16, 32], 4).output_size(224, 224) == (56, 56)


# --- DynamicPositionBias -------------------------------------------------------------------------

@pytest.mark.parametrize("dim,heads,group", [(16, 3, (3, 5)), (24, 2, (1, 4)), (32, 1, (2, 2)),
                                             (12, 4, (2, 1))])
def test_dynamic_position_bias_pair_by_pair(dim, heads, group):
    """The module (its offset table and gather) against the MLP applied pair by pair. The DPB is
    plain torch, so its gradients are checked in float64 (to 1e-12: the formula, exactly); in
    float32 they are sums that cancel, whose rounding alone can pass 1e-5 of their largest value
    (1.8e-5 in pos2.0.bias for one cotangent we drew)."""
    seed = dim + heads
    module = randomize(DynamicPositionBias(dim, heads), seed)
    gh, gw = group
    P = leaves(module.state_dict())
    want = ref.position_bias(P, "", gh, gw)
    assert module(gh, gw).shape == (heads, gh * gw, gh * gw)
    assert _rel(module(gh, gw).detach(), want.detach()) <= REL
    module64 = copy.deepcopy(module).double()
    got = module64(gh, gw)
    cot = randn(*want.shape, seed=seed + 1).double()
    (got * cot).sum().backward()
    (want * cot).sum().backward()
    assert got.dtype == torch.float64 and _rel(got.detach(), want.detach()) <= 1e-12
    for name, p in module64.named_parameters():
        assert _rel(p.grad, P[name].grad) <= 1e-12, name


def test_position_bias_width_is_the_official_one():
    """The official Attention builds DynamicPosBias(dim // 4), which is dim // 4 again wide."""
    assert LSDA(96, 3, 7, 8).pos.pos_proj.out_features == 6
    assert DynamicPositionBias(96, 3).pos_proj.out_features == 24


# --- LSDA ----------------------------------------------------------------------------------------

LSDA_CASES = {  # dim, heads, group_size, interval, kind, H, W, qkv_bias
    "sda_square": (48, 3, 2, 1, "sda", 4, 4, True),
    "sda_wide": (64, 4, 3, 1, "sda", 3, 9, True),
    "sda_one_group": (48, 2, 4, 1, "sda", 4, 4, False),
    "lda_tall": (64, 4, 1, 2, "lda", 6, 4, True),
    "lda_wide": (48, 1, 1, 3, "lda", 3, 6, True),
    "lda_one_group": (64, 8, 1, 1, "lda", 2, 5, False),
}


@pytest.mark.parametrize("case", LSDA_CASES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_lsda_group_by_group(case, with_bias):
    dim, heads, G, I, kind, H, W, qkv_bias = LSDA_CASES[case]
    seed = list(LSDA_CASES).index(case) + 10 * with_bias
    module = randomize(LSDA(dim, heads, G, I, kind, with_bias, qkv_bias), seed)
    x = randn(2, H * W, dim, seed=seed + 1)
    check_with_given_biases(
        module, lambda m, t: m(t, H, W),
        lambda P, t, given: ref.lsda(P, "", t, H, W, heads, kind, G, I, with_bias,
                                     given[0] if given else None), [x], seed, f"LSDA {case}")
    assert module(x, H, W).shape == x.shape


def test_sda_and_lda_differ():
    """The same weights grouped two ways: a test that confused them would not notice."""
    sda, lda = LSDA(48, 2, 2, 2, "sda"), LSDA(48, 2, 2, 2, "lda")
    lda.load_state_dict(randomize(sda, 1).state_dict())
    x = randn(1, 16, 48, seed=2)
    assert (sda(x, 4, 4) - lda(x, 4, 4)).abs().max() > 1e-2


# --- CrossFormerBlock ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind,G,I,H,W", [("sda", 2, 1, 4, 6), ("lda", 1, 2, 6, 4)])
def test_block(kind, G, I, H, W):
    seed = 3 + (kind == "lda")
    module = randomize(CrossFormerBlock(48, 3, G, I, kind, mlp_ratio=2.0), seed)
    x = randn(2, H * W, 48, seed=seed + 1)
    check_with_given_biases(
        module, lambda m, t: m(t, H, W),
        lambda P, t, given: ref.crossformer_block(P, "", t, H, W, 3, kind, G, I,
                                                  given[0] if given else None),
        [x], seed, f"CrossFormerBlock {kind}")


# --- CrossFormer ---------------------------------------------------------------------------------

CROSSFORMER_CASES = {
    # stage 0 8 x 8 (SDA 2, LDA 2), stage 1 4 x 4 (SDA 2, LDA over all)
    "square": dict(img_size=32, patch_size=[4, 8], in_chans=3, num_classes=5, embed_dim=48,
                   depths=[2, 2], num_heads=[2, 4], group_size=[2, 2], crs_interval=[2, 1],
                   mlp_ratio=2.0, qkv_bias=True, merge_size=[[2, 4]]),
    # stage 0 8 x 16 (SDA 4, LDA 2); stage 1 4 x 8: min(4, 8) <= 4, so SDA 4 for both blocks;
    # stage 2 2 x 4: SDA 2; three merge kernels
    "wide": dict(img_size=[32, 64], patch_size=[4, 8, 16], in_chans=2, num_classes=3,
                 embed_dim=48, depths=[2, 2, 1], num_heads=[1, 2, 4], group_size=[4, 4, 7],
                 crs_interval=[2, 2, 1], mlp_ratio=1.5, qkv_bias=False,
                 merge_size=[[2, 4], [2, 4, 6, 8]]),
}


@pytest.mark.parametrize("case", CROSSFORMER_CASES)
def test_crossformer(case):
    config = CROSSFORMER_CASES[case]
    seed = 40 + list(CROSSFORMER_CASES).index(case)
    module = randomize(CrossFormer(**config), seed)
    size = module.img_size
    images = randn(2, config["in_chans"], *size, seed=seed + 1)
    assert module(images).shape == (2, config["num_classes"])
    check_with_given_biases(module, lambda m, x: m(x),
                            lambda P, x, given: ref.crossformer(P, config, x, given), [images],
                            seed, f"CrossFormer {case}")


def test_crossformer_follows_the_official_stage_rule():
    module = CrossFormer(**CROSSFORMER_CASES["wide"])
    kinds = [[(b.attn.kind, b.attn.group_size if b.attn.kind == "sda" else b.attn.interval)
              for b in stage.blocks] for stage in module.layers]
    assert kinds == [[("sda", 4), ("lda", 2)], [("sda", 4), ("sda", 4)], [("sda", 2)]]


def test_tiny_position_mlp():
    """embed_dim 16 (one stage): the position MLP is 1 wide, so each of its LayerNorms outputs
    its bias: the position bias is one constant per head, which the softmax ignores, and every
    DPB parameter has exactly zero gradient (the official code's rule, dim // 16, at dim 16)."""
    config = dict(img_size=32, patch_size=[4, 8], embed_dim=16, depths=[2], num_heads=[2],
                  group_size=[2], crs_interval=[2], merge_size=[], num_classes=4)
    module = randomize(CrossFormer(**config), 7)
    full = dict(config, in_chans=3)
    dead = {n for n in module.state_dict() if ".pos." in n}
    images = randn(1, 3, 32, 32, seed=8)
    check_against_reference(module, lambda m, x: m(x), lambda P, x: ref.crossformer(P, full, x),
                            [images], 7, dead, "CrossFormer tiny")


def test_crossformer_parameter_names_are_the_official_ones():
    names = set(CrossFormer(**CROSSFORMER_CASES["square"]).state_dict())
    for name in ["patch_embed.projs.1.weight", "patch_embed.norm.bias",
                 "layers.0.blocks.1.attn.qkv.weight", "layers.0.blocks.0.attn.pos.pos_proj.weight",
                 "layers.1.blocks.1.attn.pos.pos3.2.bias", "layers.0.blocks.0.norm1.weight",
                 "layers.0.blocks.1.mlp.fc2.bias", "layers.0.downsample.projs.1.weight",
                 "layers.0.downsample.norm.weight", "norm.weight", "head.bias"]:
        assert name in names, name
    assert not any("biases" in n or "relative_position_index" in n for n in names)


# --- checkpoints ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make,run", [
    (lambda: CrossScaleEmbedding(4, 16, [2, 4], 2, "before"),
     lambda m: m.forward_tokens(randn(2, 24, 4, seed=1), 4, 6)),
    (lambda: DynamicPositionBias(16, 3), lambda m: m(2, 3)),
    (lambda: LSDA(48, 3, 2, 2, "lda", qkv_bias=False), lambda m: m(randn(1, 24, 48, seed=2), 4, 6)),
    (lambda: CrossFormerBlock(48, 2, 2, 1, "sda"), lambda m: m(randn(2, 8, 48, seed=3), 2, 4)),
    (lambda: CrossFormer(**CROSSFORMER_CASES["wide"]), lambda m: m(randn(1, 2, 32, 64, seed=4))),
])
def test_checkpoint_round_trip(tmp_path, make, run):
    module = randomize(make(), 11)
    path = str(tmp_path / "model.safetensors")
    save_checkpoint(module, path)
    loaded = load_checkpoint(path)
    assert type(loaded) is type(module) and not loaded.training
    assert loaded.config == module.config
    for name, t in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    assert torch.equal(run(module), run(loaded))


# --- bad input -----------------------------------------------------------------------------------

def unchanged(module):
    saved = {n: t.clone() for n, t in module.state_dict().items()}
    return lambda: all(torch.equal(saved[n], t) for n, t in module.state_dict().items())


@pytest.mark.parametrize("make,err,match", [
    (lambda: CrossScaleEmbedding(3, 30, [4, 8, 16], 4), ValueError,
     r"dim: 30 is not divisible by 2\*\*2 = 4"),
    (lambda: CrossScaleEmbedding(3, 32, [4, 2], 4), ValueError,
     r"kernel_sizes\[1\]: 2 is smaller than the stride 4"),
    (lambda: CrossScaleEmbedding(3, 32, [], 4), ValueError, "kernel_sizes: expected at least one"),
    (lambda: CrossScaleEmbedding(3, 32, [4], 4, "middle"), ValueError, "norm: expected one of"),
    (lambda: CrossScaleEmbedding(0, 32, [4], 4), ValueError, "in_channels: must be >= 1, got 0"),
    (lambda: CrossScaleEmbedding(3, 32, 4, 4), TypeError, "kernel_sizes: expected a list"),
    (lambda: DynamicPositionBias(3, 2), ValueError, "dim: the position MLP's width"),
    (lambda: LSDA(48, 5, 2, 2), ValueError, "num_heads: 5 heads must divide the width 48"),
    (lambda: LSDA(48, 3, 0, 2), ValueError, "group_size: must be >= 1, got 0"),
    (lambda: LSDA(48, 3, 2, 2, "mda"), ValueError, "kind: expected one of sda, lda"),
    (lambda: LSDA(8, 2, 2, 2), ValueError, r"dim: the position bias's width is dim // 16"),
    (lambda: LSDA(48, 3, 2.0, 2), TypeError, "group_size: expected an int, got float"),
    (lambda: CrossFormerBlock(48, 3, 2, 2, "x"), ValueError, "kind"),
    (lambda: CrossFormer(**dict(CROSSFORMER_CASES["square"], num_heads=[2])), ValueError,
     "num_heads: expected 2 values, got 1"),
    (lambda: CrossFormer(**dict(CROSSFORMER_CASES["square"], num_heads=[2, 5])), ValueError,
     r"num_heads\[1\]: 5 heads must divide the width 96"),
    (lambda: CrossFormer(**dict(CROSSFORMER_CASES["square"], merge_size=[])), ValueError,
     "merge_size: expected 1 lists"),
    (lambda: CrossFormer(**dict(CROSSFORMER_CASES["square"], img_size=36)), ValueError,
     r"img_size: stage 0's 9x9 map does not split into SDA groups of group_size\[0\] = 2"),
    (lambda: CrossFormer(**dict(CROSSFORMER_CASES["square"], crs_interval=[3, 1])), ValueError,
     r"img_size: stage 0's 8x8 map does not split into LDA groups of crs_interval\[0\] = 3"),
    (lambda: CrossFormer(**dict(CROSSFORMER_CASES["square"], img_size=[32, 48],
                                group_size=[2, 4])), ValueError,
     r"stage 1's 4x6 map does not split into SDA groups of group_size\[1\] = 4"),
    (lambda: CrossFormer(**dict(CROSSFORMER_CASES["square"], merge_size=[[2, 3]])), ValueError,
     r"img_size: kernel_sizes: \[2, 3\] give maps of different sizes"),
    (lambda: CrossFormer(**dict(CROSSFORMER_CASES["square"], img_size=[32, 48, 64])), ValueError,
     "img_size: expected 2 values, got 3"),
    (lambda: CrossFormer(**dict(CROSSFORMER_CASES["square"], depths=[])), ValueError,
     "depths: expected at least one stage"),
])
def test_bad_construction_names_the_argument(make, err, match):
    with pytest.raises(err, match=match):
        make()


@pytest.mark.parametrize("x,H,W,err,match", [
    (torch.zeros(2, 24, 32), 4, 6, ValueError, r"x: expected \[batch, length, 48\]"),
    (torch.zeros(24, 48), 4, 6, ValueError, r"x: expected \[batch, length, 48\]"),
    ([[0.0] * 48], 1, 1, TypeError, "x: expected a torch.Tensor"),
    (torch.zeros(2, 24, 48), 4, 5, ValueError, "H, W: a 4x5 map has 20 tokens, x has 24"),
    (torch.zeros(2, 24, 48), 0, 6, ValueError, "H: must be >= 1, got 0"),
    (torch.zeros(2, 24, 48), 4, 6.0, TypeError, "W: expected an int, got float"),
    (torch.zeros(2, 18, 48), 3, 6, ValueError,
     "H, W: SDA needs map sides that are multiples of group_size = 2, got 3x6"),
    (torch.zeros(2, 1, 48), 1, 1, ValueError,
     "H, W: SDA needs map sides that are multiples of group_size = 2, got 1x1"),
])
def test_bad_lsda_input_names_the_argument(x, H, W, err, match):
    for module in (LSDA(48, 3, 2, 3, "sda"), CrossFormerBlock(48, 3, 2, 3, "sda")):
        intact = unchanged(module)
        with pytest.raises(err, match=match):
            module(x, H, W)
        assert intact()


def test_bad_lda_map_names_the_interval():
    with pytest.raises(ValueError, match="LDA needs map sides that are multiples of interval = 3, "
                                         "got 3x4"):
        LSDA(48, 3, 2, 3, "lda")(torch.zeros(1, 12, 48), 3, 4)


@pytest.mark.parametrize("call,err,match", [
    (lambda m: m(torch.zeros(1, 4, 8, 8)), ValueError, r"x: expected images \[batch, 3,"),
    (lambda m: m(torch.zeros(3, 8, 8)), ValueError, r"x: expected images"),
    (lambda m: m("x"), TypeError, "x: expected a torch.Tensor"),
    (lambda m: m(torch.zeros(1, 3, 2, 8)), ValueError,
     r"H, W: a 2x8 map is smaller than kernel 4"),
    (lambda m: m.forward_tokens(torch.zeros(1, 12, 3), 3, 3), ValueError,
     "H, W: a 3x3 map has 9 tokens, x has 12"),
    (lambda m: m.forward_tokens(torch.zeros(1, 12, 4), 3, 4), ValueError,
     r"x: expected \[batch, length, 3\]"),
])
def test_bad_embedding_input_names_the_argument(call, err, match):
    module = CrossScaleEmbedding(3, 16, [4, 8], 4)
    intact = unchanged(module)
    with pytest.raises(err, match=match):
        call(module)
    assert intact()


@pytest.mark.parametrize("x,err,match", [
    (torch.zeros(1, 3, 32, 48), ValueError, r"x: expected images \[batch, 3, 32, 32\], got"),
    (torch.zeros(1, 2, 32, 32), ValueError, r"x: expected images"),
    ([[0.0]], TypeError, "x: expected a torch.Tensor"),
])
def test_bad_images_name_the_argument(x, err, match):
    module = CrossFormer(**CROSSFORMER_CASES["square"])
    intact = unchanged(module)
    with pytest.raises(err, match=match):
        module(x)
    assert intact()


def test_bad_group_shape_names_the_argument():
    with pytest.raises(ValueError, match="group_h: must be >= 1, got 0"):
        DynamicPositionBias(16, 2)(0, 3)
