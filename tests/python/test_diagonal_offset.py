"""diagonal_offset: attention over key shards, each told where its keys start, merged, equals the
unsharded call (forward, and gradients through autograd)."""

import numpy as np
import pytest
import torch

import xattn


def _problem(seed, len_q=13, len_k=41):
    rng = np.random.default_rng(seed)
    shape = lambda length, dim: (2, 3, length, dim)  # noqa: E731
    q = rng.standard_normal(shape(len_q, 8)).astype(np.float32)
    k = rng.standard_normal(shape(len_k, 8)).astype(np.float32)
    v = rng.standard_normal(shape(len_k, 5)).astype(np.float32)
    return q, k, v


@pytest.mark.parametrize("causal,window,align", [
    (True, None, "top_left"), (True, None, "bottom_right"), (False, (4, 2), "top_left"),
    (True, (6, -1), "bottom_right")])
def test_key_shards_merge_into_the_whole(causal, window, align):
    q, k, v = _problem(1)
    len_q, len_k = q.shape[2], k.shape[2]
    whole, whole_lse = xattn.attention(q, k, v, causal=causal, window=window, align=align,
                                       return_lse=True)
    # The whole problem's diagonal, moved to each shard's first key (top-left calls).
    shift = len_k - len_q if align == "bottom_right" else 0
    cuts = [0, 9, 9, 30, len_k]  # uneven, one shard empty
    out = lse = None
    for first, end in zip(cuts, cuts[1:]):
        part = xattn.attention(q, k[:, :, first:end], v[:, :, first:end], causal=causal,
                               window=window, diagonal_offset=shift - first, return_lse=True)
        out, lse = part if out is None else xattn.merge(out, lse, *part)
    np.testing.assert_allclose(out, whole, atol=2e-6)
    np.testing.assert_allclose(lse, whole_lse, atol=2e-6)


def test_gradients_flow_with_an_offset():
    q, k, v = (torch.from_numpy(x).requires_grad_() for x in _problem(2, 11, 11))
    first = 4  # keys 4.. of a causal top-left problem: the oracle is the whole call's slice
    out = xattn.attention(q, k[:, :, first:], v[:, :, first:], causal=True, diagonal_offset=-first)
    ref_q, ref_k, ref_v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    mask = torch.ones(11, 11).tril().bool()[:, first:]
    scores = (ref_q @ ref_k[:, :, first:].transpose(-1, -2)) / np.sqrt(8)
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)
    ref = weights @ ref_v[:, :, first:]
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
    dout = torch.randn_like(out)
    out.backward(dout)
    ref.backward(dout)
    for got, want in ((q.grad, ref_q.grad), (k.grad, ref_k.grad), (v.grad, ref_v.grad)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_offset_is_checked():
    q, k, v = _problem(3)
    with pytest.raises(TypeError, match="diagonal_offset"):
        xattn.attention(q, k, v, diagonal_offset=1.5)
    with pytest.raises(ValueError, match="diagonal_offset"):
        xattn.attention(q, k, v, causal=True, diagonal_offset=2**62)
