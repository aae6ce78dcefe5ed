"""CCNet's criss-cross attention against the float64 dense reference of ccnet_reference.py (every
pixel over its row ∪ column, an explicit visibility matrix): xattn.criss_cross_attention (numpy and
torch, every dtype, forward and gradients) and xattn.models.CrissCrossAttention (outputs and
gradients of every parameter and the input, recurrence 1 and 2, non-square maps); names,
checkpoints, bad input."""

import numpy as np
import pytest
import torch

import xattn
from xattn.models import CrissCrossAttention, load_checkpoint, save_checkpoint

import ccnet_reference as ref
from models_reference import check_against_reference, randn, randomize

REL = 1e-5
# B, H, W, D, Dv: square and not, a single row or column (the column problem then sees nothing
# but its masked centre), maps wider than a tile of the kernel.
SHAPES = [(2, 5, 7, 8, 16), (1, 1, 6, 4, 5), (2, 6, 1, 3, 4), (1, 19, 13, 16, 24),
          (3, 4, 4, 1, 1)]


def rel_error(got, want):
    return (torch.as_tensor(got).double() - want).abs().max().item() / want.abs().max().item()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [None, 1.0])
def test_function_matches_dense_reference(shape, scale):
    batch, height, width, d, dv = shape
    q, k = (randn(batch, height, width, d, seed=s) for s in (1, 2))
    v = randn(batch, height, width, dv, seed=3)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out, lse = xattn.criss_cross_attention(*leaves, scale=scale, return_lse=True)
    g = randn(*out.shape, seed=4)
    (out * g).sum().backward()

    want_leaves = [x.double().requires_grad_() for x in (q, k, v)]
    s = d ** -0.5 if scale is None else scale
    want = ref.criss_cross(*want_leaves, scale=s)
    (want * g.double()).sum().backward()
    assert rel_error(out, want) <= REL
    for got, w in zip(leaves, want_leaves):
        assert rel_error(got.grad, w.grad) <= REL

    # lse: log Σ over the row ∪ column of e^(s·q·k), each pixel once.
    flat = [x.double().reshape(batch, height * width, -1) for x in (q, k)]
    scores = (flat[0] @ flat[1].transpose(1, 2) * s).masked_fill(
        ~ref.cross_visibility(height, width), -float("inf"))
    want_lse = torch.logsumexp(scores, dim=-1).reshape(batch, height, width)
    assert (lse.double() - want_lse).abs().max().item() <= REL * want_lse.abs().max().item() + 1e-6


def test_numpy_and_strided_inputs():
    """numpy arrays, and channels-first maps viewed channels last (read in place)."""
    q, k, v = (randn(2, 8, 4, 6, 5, seed=s) for s in (5, 6, 7))  # [B, H, W, C, 5]: slices
    qs, ks, vs = (x[..., 1] for x in (q, k, v))                    # strided last dim
    want = ref.criss_cross(qs.double(), ks.double(), vs.double(), scale=6 ** -0.5)
    got = xattn.criss_cross_attention(qs.numpy(), ks.numpy(), vs.numpy())
    assert isinstance(got, np.ndarray) and rel_error(got, want) <= REL
    nchw = [x[..., 0].permute(0, 3, 1, 2).contiguous() for x in (q, k, v)]  # [B, C, H, W]
    got = xattn.criss_cross_attention(*(x.permute(0, 2, 3, 1) for x in nchw))
    assert rel_error(got, ref.criss_cross(*(x[..., 0].double() for x in (q, k, v)),
                                          scale=6 ** -0.5)) <= REL


@pytest.mark.parametrize("dtype,unit", [(torch.float16, 2.0 ** -11), (torch.bfloat16, 2.0 ** -8)])
def test_16_bit_inputs(dtype, unit):
    """16-bit inputs, f32 accumulation: the error beyond f32's is the result's own rounding
    (one unit of the dtype, relative to the largest value), in out and in every gradient."""
    q, k, v = (randn(2, 7, 9, 8, seed=s).to(dtype) for s in (8, 9, 10))
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = xattn.criss_cross_attention(*leaves)
    assert out.dtype == dtype
    g = randn(*out.shape, seed=11).to(dtype)
    (out * g).sum().backward()
    want_leaves = [x.double().requires_grad_() for x in (q, k, v)]
    want = ref.criss_cross(*want_leaves, scale=8 ** -0.5)
    (want * g.double()).sum().backward()
    assert rel_error(out, want) <= REL + unit
    for got, w in zip(leaves, want_leaves):
        assert got.grad.dtype == dtype and rel_error(got.grad, w.grad) <= REL + unit


def test_empty_maps():
    for shape in [(0, 3, 4), (2, 0, 4), (2, 3, 0)]:
        q = torch.zeros(*shape, 5)
        assert xattn.criss_cross_attention(q, q, torch.zeros(*shape, 7)).shape == (*shape, 7)


def test_function_bad_input():
    q = torch.zeros(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"k: dims \[B, H, W\] must be q's \[2, 3, 4\], got \[2, 4, 3\]"):
        xattn.criss_cross_attention(q, torch.zeros(2, 4, 3, 5), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"k: dim 3 \(D\) must be 5, got 6"):
        xattn.criss_cross_attention(q, torch.zeros(2, 3, 4, 6), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"v: expected 4-D \[B, H, W, channels\], got shape"):
        xattn.criss_cross_attention(q, q, torch.zeros(2, 3, 4))
    with pytest.raises(TypeError, match="v: dtype torch.float16 differs from q's"):
        xattn.criss_cross_attention(q, q, q.half())
    with pytest.raises(TypeError, match="do not mix numpy and torch"):
        xattn.criss_cross_attention(q, q.numpy(), q)
    with pytest.raises(ValueError, match="scale: must be finite"):
        xattn.criss_cross_attention(q, q, q, scale=float("inf"))


# --- the module --------------------------------------------------------------------------------

def build(channels, recurrence, seed):
    """A module with every parameter random, γ included (it starts at 0: the identity)."""
    module = randomize(CrissCrossAttention(channels, recurrence), seed)
    with torch.no_grad():
        module.gamma.fill_(0.5 + 0.1 * seed)
    return module


@pytest.mark.parametrize("channels,recurrence,batch,height,width",
                         [(16, 1, 2, 5, 7), (8, 2, 1, 6, 6), (24, 2, 2, 9, 4), (16, 1, 1, 1, 5),
                          (32, 3, 1, 3, 11)])
def test_module_matches_reference(channels, recurrence, batch, height, width):
    seed = channels + recurrence + height
    module = build(channels, recurrence, seed)
    x = randn(batch, channels, height, width, seed=seed + 1)
    # key_conv's bias adds q·b to every score of a row: the softmax cancels it (zero gradient).
    check_against_reference(module, lambda m, x: m(x),
                            lambda P, x: ref.criss_cross_module(P, x, recurrence), [x], seed,
                            zero_grads={"key_conv.bias"}, label=f"CC {channels} r{recurrence}")


def test_module_names_and_identity_at_init():
    module = CrissCrossAttention(16)
    assert set(module.state_dict()) == {
        f"{n}.{p}" for n in ("query_conv", "key_conv", "value_conv") for p in ("weight", "bias")
    } | {"gamma"}
    assert module.query_conv.weight.shape == (2, 16, 1, 1)
    assert module.value_conv.weight.shape == (16, 16, 1, 1)
    x = randn(1, 16, 3, 4, seed=0)
    assert torch.equal(module(x), x)  # γ = 0


def test_module_checkpoint_round_trip(tmp_path):
    module = build(16, 2, 3)
    save_checkpoint(module, tmp_path / "cc.safetensors")
    again = load_checkpoint(tmp_path / "cc.safetensors")
    assert isinstance(again, CrissCrossAttention) and again.config == module.config
    x = randn(2, 16, 4, 5, seed=1)
    assert torch.equal(again(x), module(x))


def test_module_bad_input():
    with pytest.raises(ValueError, match="in_channels: expected an int >= 8, got 4"):
        CrissCrossAttention(4)
    with pytest.raises(ValueError, match="recurrence: expected an int >= 1, got 0"):
        CrissCrossAttention(16, recurrence=0)
    module = CrissCrossAttention(16)
    with pytest.raises(ValueError, match=r"x: expected \[batch, 16, height, width\], got \[1, 8, 3, 3\]"):
        module(torch.zeros(1, 8, 3, 3))
    with pytest.raises(TypeError, match="x: expected a torch.Tensor, got ndarray"):
        module(np.zeros((1, 16, 3, 3), np.float32))
