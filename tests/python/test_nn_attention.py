"""xattn.nn.Attention, the routed layer, against the formula written out in numpy (float64):
self, cross and SelfDoc routing, unscaled scores, the γ residuals, masks, parameters."""

import math

import numpy as np
import pytest
import torch

import xattn
from xattn.nn import Attention




def make(input_widths, query, key, value, heads, qk_dim, v_dim, bias=True, out_proj=True,
         scaled=True, residual="none", seed=0):
    rng = np.random.default_rng(seed)
    wq = input_widths[query]
    shapes = {"q_proj": (qk_dim, wq), "k_proj": (qk_dim, input_widths[key]),
              "v_proj": (v_dim, input_widths[value])}
    if out_proj:
        shapes["out_proj"] = (wq, v_dim)
    state = {}
    for name, shape in shapes.items():
        state[name + ".weight"] = rng.standard_normal(shape).astype(np.float32) / math.sqrt(shape[1])
        if bias:
            state[name + ".bias"] = rng.standard_normal(shape[0]).astype(np.float32) * 0.1
    if residual != "none":
        state["gamma"] = np.array([0.7], np.float32)
    layer = Attention(input_widths, query=query, key=key, value=value, num_heads=heads,
                      qk_dim=qk_dim, v_dim=v_dim, bias=bias, out_proj=out_proj, scaled=scaled,
                      residual=residual)
    assert sorted(layer.parameter_names()) == sorted(state)
    layer.load_state_dict(state)
    return layer, state


def formula(state, inputs, query, key, value, heads, scaled, residual, mask=None):
    """The layer written out: projections, per-head softmax(s * q k^T + mask) v, out_proj,
    residual. float64."""
    x = [np.asarray(t, np.float64) for t in inputs]
    def linear(name, t):
        y = t @ state[name + ".weight"].astype(np.float64).T
        return y + state[name + ".bias"] if name + ".bias" in state else y
    q, k, v = linear("q_proj", x[query]), linear("k_proj", x[key]), linear("v_proj", x[value])
    N, L, _ = q.shape
    S = k.shape[1]
    D, Dv = q.shape[2] // heads, v.shape[2] // heads
    split = lambda t, d: t.reshape(N, t.shape[1], heads, d).transpose(0, 2, 1, 3)  # noqa: E731
    s = split(q, D) @ split(k, D).transpose(0, 1, 3, 2) * (1 / math.sqrt(D) if scaled else 1.0)
    if mask is not None:
        s = s + mask
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    a = (p @ split(v, Dv)).transpose(0, 2, 1, 3).reshape(N, L, heads * Dv)
    y = linear("out_proj", a) if "out_proj.weight" in state else a
    if residual == "add":
        return x[query] + state["gamma"][0] * y
    if residual == "scale":
        return state["gamma"][0] * y
    return y


def check(got, want, rel=1e-5):
    assert got.shape == want.shape and got.dtype == np.float32
    err = np.abs(got - want).max()
    assert err <= rel * np.abs(want).max(), err


def test_selfdoc_routing_queries_and_values_from_one_modality_keys_from_the_other():
    rng = np.random.default_rng(1)
    text, layout = rng.standard_normal((2, 9, 24)), rng.standard_normal((2, 9, 16))
    inputs = [text.astype(np.float32), layout.astype(np.float32)]
    layer, state = make([24, 16], 0, 1, 0, heads=4, qk_dim=32, v_dim=24)
    check(layer(*inputs), formula(state, inputs, 0, 1, 0, 4, True, "none"))


@pytest.mark.parametrize("routing", [(0, 0, 0), (0, 1, 1), (1, 0, 2), (2, 1, 0), (1, 2, 2)])
def test_any_routing_matches_the_formula(routing):
    q, k, v = routing
    rng = np.random.default_rng(sum(routing))
    widths = [12, 20, 8]
    lengths = {q: 5, k: 7, v: 7}  # keys and values share a length; the query's may differ
    inputs = [rng.standard_normal((3, lengths.get(i, 4), w)).astype(np.float32)
              for i, w in enumerate(widths)]
    layer, state = make(widths, q, k, v, heads=2, qk_dim=16, v_dim=10)
    check(layer(*inputs), formula(state, inputs, q, k, v, 2, True, "none"))


@pytest.mark.parametrize("residual", ["none", "add", "scale"])
@pytest.mark.parametrize("out_proj", [True, False])
def test_unscaled_danet_style_with_residuals(residual, out_proj):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 16, 32)).astype(np.float32) * 0.3
    v_dim = 32  # without out_proj the residual needs v_dim = the input width
    layer, state = make([32], 0, 0, 0, heads=1, qk_dim=4, v_dim=v_dim, out_proj=out_proj,
                        scaled=False, residual=residual)
    check(layer(x), formula(state, [x], 0, 0, 0, 1, False, residual))


def test_gamma_starts_at_zero_so_the_add_residual_starts_as_identity():
    x = np.random.default_rng(4).standard_normal((1, 6, 8)).astype(np.float32)
    layer = Attention([8], residual="add")
    np.testing.assert_array_equal(layer(x), x)


def test_masks_and_causal_reach_the_kernel():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 6, 8)).astype(np.float32), rng.standard_normal((2, 6, 8)).astype(np.float32)
    layer, state = make([8, 8], 0, 1, 1, heads=2, qk_dim=8, v_dim=8)
    causal = np.triu(np.full((6, 6), -np.inf), 1)
    check(layer(a, b, causal=True), formula(state, [a, b], 0, 1, 1, 2, True, "none", causal))
    mask = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    check(layer(a, b, mask=mask), formula(state, [a, b], 0, 1, 1, 2, True, "none", mask))


def test_torch_tensors_in_and_out():
    layer, state = make([8, 6], 0, 1, 1, heads=2, qk_dim=8, v_dim=8)
    a, b = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    out = layer(a, b)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    check(out.numpy(), formula(state, [a.numpy(), b.numpy()], 0, 1, 1, 2, True, "none"))


def test_bad_configurations_and_inputs_are_named():
    with pytest.raises(xattn.Error, match="key_input must index one of the 2 inputs, got 2"):
        Attention([8, 8], key=2)
    with pytest.raises(xattn.Error, match="output width equal to its width 8, got 6"):
        Attention([8], v_dim=6, out_proj=False, residual="add")
    with pytest.raises(xattn.Error, match="divide qk_dim"):
        Attention([8], num_heads=3)
    with pytest.raises(xattn.Error, match="residual: must be"):
        Attention([8], residual="sum")
    layer = Attention([8, 4], key=1, value=1)
    x, y = np.zeros((2, 3, 8), np.float32), np.zeros((2, 5, 4), np.float32)
    with pytest.raises(xattn.Error, match="inputs: expected 2 sequences, got 1"):
        layer(x)
    with pytest.raises(xattn.Error, match=r"inputs\[1\] \(key\): last dim must be 4, got 8"):
        layer(x, x)
    with pytest.raises(xattn.Error, match="query's batch 2"):
        layer(x, np.zeros((3, 5, 4), np.float32))
    with pytest.raises(xattn.Error, match="missing 'q_proj.bias'"):
        layer.load_state_dict({"q_proj.weight": np.zeros((8, 8), np.float32)})
    with pytest.raises(TypeError):
        layer(x, y.astype(np.float64))
