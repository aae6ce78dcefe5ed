"""Gradients through xattn.attention (torch autograd) against torch autograd of the float64
oracle. The C++ tests check attention_backward itself on every feature and target; these check
the wiring: which inputs get gradients, GQA, masks, lengths, dtypes, 3-D inputs, SDPA."""

import math

import pytest
import torch

import xattn
import xattn_oracle as oracle


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def grads_of(fn, inputs, dout):
    """Gradients of sum(fn(*inputs) * dout) with respect to every input."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    (fn(*leaves) * dout).sum().backward()
    return [x.grad for x in leaves]


CONFIGS = {
    "plain": dict(),
    "causal": dict(causal=True),
    "bottom_right_window": dict(causal=True, align="bottom_right", window=(5, 0)),
    "softcap_scale": dict(softcap=5.0, scale=0.3),
    "lengths": dict(kv_lens=[20, 0], q_lens=[9, 11]),
}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (4, 1)])
def test_gradients_match_float64_autograd(name, heads):
    hq, hkv = heads
    kwargs = CONFIGS[name]
    q, k, v = randn(2, hq, 11, 16, seed=1), randn(2, hkv, 23, 16, seed=2), randn(2, hkv, 23, 24, seed=3)
    dout = randn(2, hq, 11, 24, seed=4)
    got = grads_of(lambda a, b, c: xattn.attention(a, b, c, **kwargs), (q, k, v), dout)
    want = grads_of(lambda a, b, c: oracle.attention(a, b, c, **kwargs)[0],
                    [x.double() for x in (q, k, v)], dout.double())
    for g, w, arg in zip(got, want, "qkv"):
        assert g.dtype == torch.float32 and g.shape == w.shape
        err = (g.double() - w).abs().max().item()
        assert err <= 1e-4 * max(w.abs().max().item(), 1e-3), (arg, err)


def test_mask_gqa_and_three_d_inputs():
    q, k, v = randn(3, 9, 8, seed=5), randn(3, 14, 8, seed=6), randn(3, 14, 8, seed=7)
    mask = randn(3, 9, 14, seed=8)
    mask[:, :, ::3] = -math.inf
    dout = randn(3, 9, 8, seed=9)
    got = grads_of(lambda a, b, c: xattn.attention(a, b, c, mask=mask), (q, k, v), dout)
    four = lambda x: x.double().unsqueeze(1)  # noqa: E731
    want = grads_of(lambda a, b, c: oracle.attention(four(a), four(b), four(c),
                                                     mask=four(mask))[0].squeeze(1),
                    (q, k, v), dout.double())
    for g, w in zip(got, want):
        assert (g.double() - w.double()).abs().max().item() <= 1e-4 * w.abs().max().item()


def test_bfloat16_gradients():
    q, k, v = (randn(1, 2, 16, 32, dtype=torch.bfloat16, seed=s) for s in (10, 11, 12))
    dout = randn(1, 2, 16, 32, dtype=torch.bfloat16, seed=13)
    got = grads_of(lambda a, b, c: xattn.attention(a, b, c, causal=True), (q, k, v), dout)
    want = grads_of(lambda a, b, c: oracle.attention(a, b, c, causal=True)[0],
                    [x.double() for x in (q, k, v)], dout.double())
    for g, w in zip(got, want):
        assert g.dtype == torch.bfloat16
        # bf16 gradients: their own rounding (2^-8 of a value) and the bf16 output the backward
        # starts from (its delta = dout·out carries out's 2^-8).
        assert (g.double() - w).abs().max().item() <= 2**-6 * w.abs().max().item()


def test_only_inputs_that_require_grad_get_one():
    q, k, v = randn(1, 2, 5, 8, seed=14), randn(1, 2, 7, 8, seed=15), randn(1, 2, 7, 8, seed=16)
    q.requires_grad_()
    out = xattn.attention(q, k, v)
    out.sum().backward()
    assert q.grad is not None and k.grad is None and v.grad is None


def test_lse_and_weights_are_returned_but_not_differentiated():
    q, k, v = (randn(1, 1, 4, 8, seed=s).requires_grad_() for s in (17, 18, 19))
    out, lse, weights = xattn.attention(q, k, v, return_lse=True, return_weights=True)
    assert out.requires_grad and not lse.requires_grad and not weights.requires_grad
    want_out, want_lse, want_w = oracle.attention(q.double(), k.double(), v.double())
    assert (lse.double() - want_lse).abs().max() < 1e-5
    assert (weights.double() - want_w).abs().max() < 1e-5


def test_scaled_dot_product_attention_gradients():
    q, k, v = randn(2, 3, 6, 8, seed=20), randn(2, 3, 9, 8, seed=21), randn(2, 3, 9, 8, seed=22)
    dout = randn(2, 3, 6, 8, seed=23)
    got = grads_of(lambda a, b, c: xattn.scaled_dot_product_attention(a, b, c, is_causal=True),
                   (q, k, v), dout)
    want = grads_of(lambda a, b, c: oracle.sdpa(a, b, c, is_causal=True),
                    [x.double() for x in (q, k, v)], dout.double())
    for g, w in zip(got, want):
        assert (g.double() - w).abs().max().item() <= 1e-4 * w.abs().max().item()


def test_no_graph_without_grad_mode():
    q = randn(1, 1, 4, 8, seed=24).requires_grad_()
    with torch.no_grad():
        out = xattn.attention(q, q, q)
    assert not out.requires_grad


@pytest.mark.parametrize("mask_shape", [(2, 3, 6, 9), (3, 6, 9), (6, 9), (2, 1, 6, 9), (1, 3, 1, 9)])
def test_a_learned_bias_gets_its_gradient(mask_shape):
    """A float mask that requires grad (relative position bias, CrossFormer's dynamic position
    bias) gets dmask, summed over the dims it broadcasts."""
    q, k, v = randn(2, 3, 6, 8, seed=27), randn(2, 3, 9, 8, seed=28), randn(2, 3, 9, 8, seed=29)
    bias = randn(*mask_shape, seed=30)
    dout = randn(2, 3, 6, 8, seed=31)
    got = grads_of(lambda a, b, c, m: xattn.attention(a, b, c, mask=m, causal=True),
                   (q, k, v, bias), dout)
    want = grads_of(lambda a, b, c, m: oracle.attention(a, b, c, mask=m, causal=True)[0],
                    [x.double() for x in (q, k, v, bias)], dout.double())
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert (g.double() - w).abs().max().item() <= 1e-4 * w.abs().max().item()


def test_varlen_gradients_equal_each_sequence_alone():
    """Packed sequences: each sequence's gradients are those of attention() on it alone."""
    cu_q, cu_k = [0, 3, 3, 8], [0, 4, 6, 13]
    q, k, v = randn(8, 4, 16, seed=32), randn(13, 2, 16, seed=33), randn(13, 2, 8, seed=34)
    dout = randn(8, 4, 8, seed=35)
    got = grads_of(lambda a, b, c: xattn.attention_varlen(a, b, c, cu_q, cu_k, causal=True,
                                                          align="bottom_right"), (q, k, v), dout)
    for b in range(3):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        if cu_q[b] == cu_q[b + 1]:
            assert (got[1][ks] == 0).all() and (got[2][ks] == 0).all()  # no query sees them
            continue
        dense = lambda t: t.transpose(0, 1).unsqueeze(0)  # noqa: E731  [T, H, X] -> [1, H, T, X]
        want = grads_of(lambda a, c, e: xattn.attention(dense(a), dense(c), dense(e), causal=True,
                                                        align="bottom_right"),
                        (q[qs], k[ks], v[ks]), dense(dout[qs]))
        for g, w in zip((got[0][qs], got[1][ks], got[2][ks]), want):
            assert (g - w).abs().max().item() <= 1e-6 * max(w.abs().max().item(), 1.0)
