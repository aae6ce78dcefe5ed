"""Edge cases where the Python layer matters: wrong types in every public function and layer
method, empty arrays, integers beyond the binding's C types, outputs that could never fit in
memory, negative strides, the GIL during compute, and several Python threads at once. The
numerics themselves are the C++ tests' (tests/cpp/edge_cases_test.cc); docs/robustness.md lists
what each test shows."""

import math
import threading
import time

import numpy as np
import pytest
import torch

import xattn
import xattn_oracle as oracle
from xattn.nn import Attention, MultiheadAttention
from xattn_oracle import to_f64


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def nrandn(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- Wrong types ---------------------------------------------------------------------------------

# Values of the wrong type for an array argument: None, nested lists, Python scalars, strings,
# numpy arrays and torch tensors of dtypes xattn has no kernel for, and a tensor that is not on
# the CPU (the meta device stands in for CUDA).
BAD_ARRAYS = [None, [[1.0, 2.0]], 1.5, 3, "q", b"q", np.zeros((1, 1, 2, 4)),
              np.zeros((1, 1, 2, 4), np.int32), np.zeros((1, 1, 2, 4), np.complex64),
              torch.zeros(1, 1, 2, 4, dtype=torch.float64),
              torch.zeros(1, 1, 2, 4, dtype=torch.int64),
              torch.zeros(1, 1, 2, 4, dtype=torch.complex64),
              torch.zeros(1, 1, 2, 4, device="meta")]
BAD_BOOLS = [None, 1, 0.0, "yes", [True], torch.tensor(True)]
BAD_INTS = [None, 1.5, "2", [2], torch.tensor(2.0)]
BAD_REALS = [None, "0.5", [0.5], True]


def qkv():
    return randn(1, 2, 3, 4), randn(1, 1, 5, 4, seed=1), randn(1, 1, 5, 4, seed=2)


def mha():
    return MultiheadAttention(8, 2)


def mha_inputs():
    return randn(3, 2, 8), randn(5, 2, 8, seed=1), randn(5, 2, 8, seed=2)


def routed():
    return Attention([8, 6], query=0, key=1, value=1, num_heads=2)


def cases():
    """(name, argument, call(bad value)) for every public entry point and argument."""
    q, k, v = qkv()
    out, lse = randn(2, 3, 4), torch.zeros(2, 3)
    Q, K, V = mha_inputs()
    x0, x1 = randn(2, 3, 8), randn(2, 4, 6, seed=1)
    all_cases = []

    def add(name, arg, call, bad_values):
        all_cases.extend((name, arg, call, bad) for bad in bad_values)

    # attention: every array and option
    add("attention", "q", lambda b: xattn.attention(b, k, v), BAD_ARRAYS)
    add("attention", "k", lambda b: xattn.attention(q, b, v), BAD_ARRAYS)
    add("attention", "v", lambda b: xattn.attention(q, k, b), BAD_ARRAYS)
    add("attention", "mask", lambda b: xattn.attention(q, k, v, mask=b), BAD_ARRAYS[1:])
    add("attention", "causal", lambda b: xattn.attention(q, k, v, causal=b), BAD_BOOLS)
    add("attention", "return_lse", lambda b: xattn.attention(q, k, v, return_lse=b), BAD_BOOLS)
    add("attention", "return_weights", lambda b: xattn.attention(q, k, v, return_weights=b),
        BAD_BOOLS)
    add("attention", "scale", lambda b: xattn.attention(q, k, v, scale=b), BAD_REALS[1:])
    add("attention", "softcap", lambda b: xattn.attention(q, k, v, softcap=b), BAD_REALS)
    add("attention", "num_threads", lambda b: xattn.attention(q, k, v, num_threads=b), BAD_INTS)
    add("attention", "window", lambda b: xattn.attention(q, k, v, window=(b, 1)), BAD_INTS[1:])
    add("attention", "align", lambda b: xattn.attention(q, k, v, align=b), [None, 1, b"top_left"])
    add("attention", "kv_lens", lambda b: xattn.attention(q, k, v, kv_lens=b),
        ["5", 5, [5.0], [None], np.array([5.0]), torch.tensor([True])])
    add("attention", "bf16_probabilities",
        lambda b: xattn.attention(q, k, v, bf16_probabilities=b), BAD_BOOLS)
    # attention_varlen
    pq, pk = randn(3, 2, 4), randn(5, 1, 4, seed=1)
    add("attention_varlen", "q", lambda b: xattn.attention_varlen(b, pk, pk, [0, 3], [0, 5]),
        BAD_ARRAYS)
    add("attention_varlen", "cu_seqlens_q",
        lambda b: xattn.attention_varlen(pq, pk, pk, b, [0, 5]), [None, "03", 3, [0.0, 3.0]])
    add("attention_varlen", "causal",
        lambda b: xattn.attention_varlen(pq, pk, pk, [0, 3], [0, 5], causal=b), BAD_BOOLS)
    add("attention_varlen", "return_weights",
        lambda b: xattn.attention_varlen(pq, pk, pk, [0, 3], [0, 5], return_weights=b), BAD_BOOLS)
    # merge
    add("merge", "out_a", lambda b: xattn.merge(b, lse, out, lse), BAD_ARRAYS)
    add("merge", "lse_b", lambda b: xattn.merge(out, lse, out, b), BAD_ARRAYS)
    # scaled_dot_product_attention: torch's names
    add("sdpa", "query", lambda b: xattn.scaled_dot_product_attention(b, q, q), BAD_ARRAYS)
    add("sdpa", "value", lambda b: xattn.scaled_dot_product_attention(q, q, b), BAD_ARRAYS)
    add("sdpa", "attn_mask", lambda b: xattn.scaled_dot_product_attention(q, q, q, attn_mask=b),
        BAD_ARRAYS[1:])
    add("sdpa", "is_causal", lambda b: xattn.scaled_dot_product_attention(q, q, q, is_causal=b),
        BAD_BOOLS)
    add("sdpa", "enable_gqa", lambda b: xattn.scaled_dot_product_attention(q, q, q, enable_gqa=b),
        BAD_BOOLS)
    add("sdpa", "dropout_p", lambda b: xattn.scaled_dot_product_attention(q, q, q, dropout_p=b),
        BAD_REALS)
    add("sdpa", "scale", lambda b: xattn.scaled_dot_product_attention(q, q, q, scale=b),
        BAD_REALS[1:])
    # safetensors
    add("load_safetensors", "path", lambda b: xattn.load_safetensors(b), [None, 3, ["a"]])
    add("load_safetensors", "framework", lambda b: xattn.load_safetensors("x", framework=b),
        [None, 1])
    add("load_safetensors", "with_metadata",
        lambda b: xattn.load_safetensors("/nonexistent", with_metadata=b), BAD_BOOLS)
    add("save_safetensors", "path", lambda b: xattn.save_safetensors(b, {}), [None, 3])
    add("save_safetensors", "tensors", lambda b: xattn.save_safetensors("/tmp/x", b),
        [None, [q], "q", {1: q}])
    add("save_safetensors", "tensors['a']", lambda b: xattn.save_safetensors("/tmp/x", {"a": b}),
        BAD_ARRAYS[:-1])
    add("save_safetensors", "metadata", lambda b: xattn.save_safetensors("/tmp/x", {}, b),
        [[("a", "b")], "a", {"a": 1}, {1: "a"}])
    add("force_simd_target", "name", lambda b: xattn.force_simd_target(b), [None, 1, b"AVX2"])
    add("force_bf16_dot_products", "mode", lambda b: xattn.force_bf16_dot_products(b),
        [None, 1, b"on"])
    # nn.MultiheadAttention: constructor, every method
    for arg in ("embed_dim", "num_heads", "kdim", "vdim", "seed"):
        add("MultiheadAttention", arg, lambda b, arg=arg: MultiheadAttention(
            **{"embed_dim": 8, "num_heads": 2, arg: b}), BAD_INTS[1:])
    for arg in ("bias", "add_bias_kv", "add_zero_attn", "batch_first"):
        add("MultiheadAttention", arg, lambda b, arg=arg: MultiheadAttention(8, 2, **{arg: b}),
            BAD_BOOLS)
    layer = mha()
    add("MultiheadAttention.forward", "query", lambda b: layer(b, K, V), BAD_ARRAYS)
    add("MultiheadAttention.forward", "value", lambda b: layer(Q, K, b), BAD_ARRAYS)
    add("MultiheadAttention.forward", "key_padding_mask",
        lambda b: layer(Q, K, V, key_padding_mask=b), BAD_ARRAYS[1:])
    add("MultiheadAttention.forward", "attn_mask", lambda b: layer(Q, K, V, attn_mask=b),
        BAD_ARRAYS[1:])
    for arg in ("need_weights", "average_attn_weights", "is_causal"):
        add("MultiheadAttention.forward", arg, lambda b, arg=arg: layer(Q, K, V, **{arg: b}),
            BAD_BOOLS)
    add("MultiheadAttention.forward", "num_threads", lambda b: layer(Q, K, V, num_threads=b),
        BAD_INTS)
    add("MultiheadAttention.make_cache", "batch", lambda b: layer.make_cache(b), BAD_INTS)
    add("MultiheadAttention.make_cache", "capacity", lambda b: layer.make_cache(2, b), BAD_INTS)
    cache = layer.make_cache(2)
    add("MultiheadAttention.extend_cache", "cache", lambda b: layer.extend_cache(b, K, V),
        [None, "cache", {}])
    add("MultiheadAttention.extend_cache", "key", lambda b: layer.extend_cache(cache, b, V),
        BAD_ARRAYS)
    add("MultiheadAttention.forward_cached", "query", lambda b: layer.forward_cached(b, cache),
        BAD_ARRAYS)
    add("MultiheadAttention.forward_cached", "cache", lambda b: layer.forward_cached(Q, b),
        [None, "cache"])
    add("MultiheadAttention.load_state_dict", "state_dict", lambda b: layer.load_state_dict(b),
        [None, [1], "in_proj_weight", 3])
    add("MultiheadAttention.load_state_dict", "in_proj_weight",
        lambda b: layer.load_state_dict({"in_proj_weight": b}), BAD_ARRAYS[1:-1])
    add("MultiheadAttention.load_safetensors", "path", lambda b: layer.load_safetensors(b),
        [None, 3])
    add("MultiheadAttention.load_safetensors", "prefix",
        lambda b: layer.load_safetensors("x", prefix=b), [None, 3])
    add("MultiheadAttention.from_torch", "module", lambda b: MultiheadAttention.from_torch(b),
        [None, "mha", torch.nn.Linear(2, 2)])
    # nn.Attention
    add("Attention", "input_widths", lambda b: Attention(b), [None, 8, "8", [8.0], [None]])
    for arg in ("query", "key", "value", "num_heads", "qk_dim", "v_dim", "seed"):
        add("Attention", arg, lambda b, arg=arg: Attention([8, 6], **{arg: b}), BAD_INTS[1:])
    for arg in ("bias", "out_proj", "scaled"):
        add("Attention", arg, lambda b, arg=arg: Attention([8, 6], **{arg: b}), BAD_BOOLS)
    add("Attention", "residual", lambda b: Attention([8, 6], residual=b), [None, 1])
    layer2 = routed()
    add("Attention.__call__", "inputs[0]", lambda b: layer2(b, x1), BAD_ARRAYS)
    add("Attention.__call__", "inputs[1]", lambda b: layer2(x0, b), BAD_ARRAYS)
    add("Attention.__call__", "mask", lambda b: layer2(x0, x1, mask=b), BAD_ARRAYS[1:])
    add("Attention.__call__", "causal", lambda b: layer2(x0, x1, causal=b), BAD_BOOLS)
    add("Attention.__call__", "kv_lens", lambda b: layer2(x0, x1, kv_lens=b), ["4", 4, [4.0]])
    add("Attention.__call__", "num_threads", lambda b: layer2(x0, x1, num_threads=b), BAD_INTS)
    add("Attention.load_state_dict", "state_dict", lambda b: layer2.load_state_dict(b),
        [None, [1], "q_proj.weight"])
    return all_cases


CASES = cases()


@pytest.mark.parametrize("name,arg,call,bad", CASES,
                         ids=[f"{n}-{a}-{type(b).__name__}{i}" for i, (n, a, _, b) in
                              enumerate(CASES)])
def test_wrong_types_raise_type_error_naming_the_argument(name, arg, call, bad):
    with pytest.raises(TypeError) as info:
        call(bad)
    message = str(info.value)
    # The message starts with the argument (a nested one may name its container or element).
    assert message.startswith(arg) or message.startswith(arg.split("[")[0]), (name, message)


def test_integers_beyond_the_bindings_c_types_raise_value_error():
    q, k, v = qkv()
    for kwargs, arg in (({"num_threads": 2**31}, "num_threads"), ({"window": (2**63, 1)}, "window"),
                        ({"kv_lens": [2**64]}, "kv_lens"), ({"q_lens": [-2**63 - 1]}, "q_lens"),
                        ({"num_threads": 5000}, "num_threads")):
        with pytest.raises(ValueError, match=f"^{arg}"):
            xattn.attention(q, k, v, **kwargs)
    with pytest.raises(ValueError, match="^seed"):
        MultiheadAttention(8, 2, seed=2**64)
    with pytest.raises(ValueError, match="^num_threads"):
        mha()(*mha_inputs(), num_threads=2**31)
    with pytest.raises(ValueError, match="^embed_dim"):
        MultiheadAttention(2**63, 1)
    with pytest.raises(ValueError, match="^cu_seqlens_k"):
        xattn.attention_varlen(randn(3, 2, 4), randn(5, 1, 4), randn(5, 1, 4), [0, 3], [0, 2**64])


# --- Empty arrays ------------------------------------------------------------------------------

@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize("shape_q,shape_k", [((0, 2, 3, 4), (0, 1, 5, 4)),
                                             ((2, 0, 3, 4), (2, 0, 5, 4)),
                                             ((2, 0, 3, 4), (2, 2, 5, 4)),
                                             ((2, 2, 0, 4), (2, 1, 5, 4)),
                                             ((2, 2, 3, 4), (2, 1, 0, 4))])
def test_empty_problems_give_empty_or_keyless_results(framework, shape_q, shape_k):
    """Zero B, H, Lq or Lk is a valid, empty problem (as in the C++ API): with no keys every row
    sees none (out 0, lse -inf), and otherwise the results are empty arrays of the right shape."""
    make = ((lambda s: np.ones(s, np.float32)) if framework == "numpy"
            else (lambda s: torch.ones(s)))
    q, k, v = make(shape_q), make(shape_k), make(shape_k[:3] + (6,))
    out, lse, w = xattn.attention(q, k, v, return_lse=True, return_weights=True, causal=True)
    assert tuple(out.shape) == shape_q[:3] + (6,) and tuple(lse.shape) == shape_q[:3]
    assert tuple(w.shape) == shape_q[:3] + (shape_k[2],)
    if shape_k[2] == 0:
        assert (np.asarray(out) == 0).all() and (np.asarray(lse) == -np.inf).all()
    if framework == "torch":  # and gradients: zeros for whatever has no partner
        q, k, v = (x.clone().requires_grad_() for x in (q, k, v))
        xattn.attention(q, k, v).sum().backward()
        for x in (q, k, v):
            assert x.grad.shape == x.shape and (x.grad == 0).all()


def test_empty_packed_batches_merges_and_sdpa():
    h, d = 2, 4
    e = np.zeros((0, h, d), np.float32)
    out, lse, w = xattn.attention_varlen(e, e, e, [0], [0], return_lse=True, return_weights=True)
    assert out.shape == (0, h, d) and lse.shape == (h, 0) and w.shape == (h, 0, 0)
    q = nrandn(3, h, d)
    out, lse = xattn.attention_varlen(q, e, e, [0, 3], [0, 0], return_lse=True)
    assert (out == 0).all() and (lse == -np.inf).all()
    out, lse = xattn.merge(np.zeros((0, 3, d), np.float32), np.zeros((0, 3), np.float32),
                           np.zeros((0, 3, d), np.float32), np.zeros((0, 3), np.float32))
    assert out.shape == (0, 3, d) and lse.shape == (0, 3)
    assert xattn.scaled_dot_product_attention(torch.ones(0, 2, 3, 4), torch.ones(0, 2, 3, 4),
                                              torch.ones(0, 2, 3, 4)).shape == (0, 2, 3, 4)


def test_zero_feature_width_is_an_error():
    with pytest.raises(ValueError, match=r"^q: dim 3 \(D\) must be positive, got 0"):
        xattn.attention(np.ones((1, 1, 2, 0), np.float32), np.ones((1, 1, 2, 0), np.float32),
                        np.ones((1, 1, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"^v: dim 3 \(Dv\) must be positive, got 0"):
        xattn.attention(np.ones((1, 1, 2, 4), np.float32), np.ones((1, 1, 2, 4), np.float32),
                        np.ones((1, 1, 2, 0), np.float32))


# --- Outputs beyond memory -------------------------------------------------------------------

@pytest.mark.parametrize("framework", ["numpy", "torch", "autograd"])
def test_outputs_that_could_never_fit_are_refused_before_allocating(framework):
    """Weights of two 2^21-long sequences need 16 TiB: xattn.Error, not MemoryError, a torch
    RuntimeError or the OOM killer. (The inputs are broadcast views: a few bytes.)"""
    n = 2**21
    if framework == "numpy":
        q = np.broadcast_to(np.float32(1), (1, 1, n, 4))
    else:
        q = torch.ones(1, 1, 1, 4, requires_grad=framework == "autograd").expand(1, 1, n, 4)
    with pytest.raises(xattn.Error, match=r"an output of shape \(1, 1, 2097152, 2097152\): "
                                          r"needs 16 TiB, more than this machine's"):
        xattn.attention(q, q, q, return_weights=True)


# --- Negative strides ------------------------------------------------------------------------

def test_numpy_negative_strides_everywhere_give_the_contiguous_result():
    """numpy's [::-1] views (negative strides) are read in place by every entry point and give
    exactly the result of their contiguous copies. (torch has no negative strides: flip copies.)
    Outputs are always allocated by the package, so they never alias an input."""
    c = np.ascontiguousarray
    q, k, v = nrandn(2, 3, 6, 8), nrandn(2, 1, 9, 8, seed=1), nrandn(2, 1, 9, 5, seed=2)
    mask = nrandn(6, 9, seed=3) > -1
    rq, rk, rv, rmask = q[:, ::-1, ::-1], k[::-1, :, ::-1], v[::-1, :, ::-1, ::-1], mask[::-1]
    np.testing.assert_array_equal(xattn.attention(rq, rk, rv, mask=rmask, causal=True),
                                  xattn.attention(c(rq), c(rk), c(rv), mask=c(rmask), causal=True))
    pq, pk = nrandn(7, 2, 8), nrandn(9, 1, 8, seed=4)
    np.testing.assert_array_equal(
        xattn.attention_varlen(pq[::-1], pk[::-1], pk[::-1, :, ::-1], [0, 3, 7], [0, 4, 9]),
        xattn.attention_varlen(c(pq[::-1]), c(pk[::-1]), c(pk[::-1, :, ::-1]), [0, 3, 7],
                               [0, 4, 9]))
    oa, la, ob, lb = nrandn(4, 3, 5), nrandn(4, 3, seed=5), nrandn(4, 3, 5, seed=6), nrandn(4, 3)
    for got, want in zip(xattn.merge(oa[::-1], la[::-1], ob[:, ::-1], lb[:, ::-1]),
                         xattn.merge(c(oa[::-1]), c(la[::-1]), c(ob[:, ::-1]), c(lb[:, ::-1]))):
        np.testing.assert_array_equal(got, want)
    layer = mha()
    Q, K, V = (x.numpy() for x in mha_inputs())
    for got, want in zip(layer(Q[::-1], K[:, ::-1], V[::-1, :, ::-1]),
                         layer(c(Q[::-1]), c(K[:, ::-1]), c(V[::-1, :, ::-1]))):
        np.testing.assert_array_equal(got, want)


def test_numpy_negative_strides_in_safetensors(tmp_path):
    x = nrandn(3, 4, 5)
    xattn.save_safetensors(tmp_path / "r.safetensors", {"x": x[::-1, :, ::-1]})
    np.testing.assert_array_equal(xattn.load_safetensors(tmp_path / "r.safetensors")["x"],
                                  x[::-1, :, ::-1])


def test_outputs_that_alias_inputs_are_refused_by_the_binding():
    """The package always allocates fresh outputs; the binding underneath, which takes them,
    refuses one that shares memory with an input or writes an element twice."""
    from xattn import _arrays as A, _xattn
    q = nrandn(1, 1, 4, 8)
    params = _xattn.Params()
    with pytest.raises(xattn.Error, match="^out: overlaps the input q"):
        _xattn.attention(A.spec(q, "q"), A.spec(q, "k"), A.spec(q, "v"), params, A.spec(q, "out"),
                         None, None)
    flat = np.zeros(8, np.float32)
    zero_stride = np.lib.stride_tricks.as_strided(flat, (1, 1, 4, 8), (0, 0, 0, 4))
    with pytest.raises(xattn.Error, match="^out: dim 2 has stride 0"):
        _xattn.attention(A.spec(q, "q"), A.spec(q, "k"), A.spec(q, "v"), params,
                         A.spec(zero_stride, "out"), None, None)


# --- Numerics through the Python path --------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_large_scores_and_minus_inf_masks_through_autograd(dtype):
    """Scores near ±1e4 with a float mask of -inf entries and fully masked rows, forward and
    autograd, against the oracle: finite, fully masked rows give 0 and zero gradients."""
    q, k, v = randn(2, 2, 9, 8, dtype=dtype), randn(2, 1, 11, 8, seed=1), randn(2, 1, 11, 8, seed=2)
    k, v = k.to(dtype), v.to(dtype)
    mask = torch.zeros(9, 11, dtype=dtype)
    mask[0] = -math.inf
    mask[:, 3::4] = -math.inf
    mask[2, 1] = -65504.0 if dtype == torch.float16 else -1e30
    scale = 2e3
    q, k, v, mask = (x.clone().requires_grad_() for x in (q, k, v, mask))
    out, lse = xattn.attention(q, k, v, mask=mask, scale=scale, return_lse=True)
    want, want_lse, _ = oracle.attention(to_f64(q), to_f64(k), to_f64(v), mask=to_f64(mask),
                                         scale=scale)
    tol = {torch.float32: 1e-5, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    torch.testing.assert_close(out.double(), want, atol=tol * 3, rtol=0)
    assert torch.all(out[:, :, 0] == 0) and torch.all(lse[:, :, 0] == -math.inf)
    torch.testing.assert_close(lse.double(), want_lse, atol=1e-5, rtol=1e-5)
    out.float().pow(2).sum().backward()
    for x in (q, k, v, mask):
        assert torch.isfinite(x.grad).all()
    assert torch.all(q.grad[:, :, 0] == 0) and torch.all(mask.grad[0] == 0)


def test_f16_numpy_near_its_largest_value():
    v = (np.sign(nrandn(1, 2, 30, 8)) * 65504).astype(np.float16)
    q, k = nrandn(1, 2, 5, 8, dtype=np.float16), nrandn(1, 2, 30, 8, dtype=np.float16, seed=1)
    out = xattn.attention(q, k, v)
    want = oracle.attention(to_f64(q), to_f64(k), to_f64(v))[0].numpy()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.astype(np.float64), want, atol=65504 * 2**-10, rtol=0)


# --- The GIL and threads -------------------------------------------------------------------------

def _long_call(make):
    """`make(scale)` returns a call whose work grows with scale; the first scale (doubling from 1)
    at which one call takes 0.2 s or more, so that the check below can tell on a CPU of any speed."""
    scale = 1
    while True:
        call = make(scale)
        start = time.perf_counter()
        call()
        if time.perf_counter() - start >= 0.2 or scale >= 256:
            return call
        scale *= 2


def _runs_without_the_gil(make):
    """Whether a second Python thread executes bytecode while a call (0.2 s or more, see
    _long_call) runs in another. Only the middle half of each call counts: around a call's start
    and end the interpreter may switch threads at a bytecode boundary (every 5 ms) even if the call
    itself held the GIL throughout, which would leave no stamp in the middle."""
    call = _long_call(make)
    windows = []

    def worker():
        begin = time.perf_counter()
        while time.perf_counter() - begin < 0.4:
            start = time.perf_counter()
            call()
            windows.append((start, time.perf_counter()))

    stamps = []
    t = threading.Thread(target=worker)
    t.start()
    while t.is_alive():
        stamps.append(time.perf_counter())
    t.join()
    middles = [(a + (b - a) / 4, b - (b - a) / 4) for a, b in windows if b - a >= 0.08]
    assert middles, f"the calls were too short to tell: {windows}"
    stamps = np.array(stamps)
    inside = sum(int(((stamps > a) & (stamps < b)).sum()) for a, b in middles)
    return inside >= 5


def test_the_gil_is_released_during_compute():
    # A C loop that holds the GIL throughout: the check must tell.
    assert not _runs_without_the_gil(lambda s: lambda: sum(range(10_000_000 * s)))
    # Work grows with the batch: each call below is one C++ call however large the scale.
    def qkv(scale, length):
        return (randn(scale, 2, length, 64, seed=i) for i in range(3))

    def forward(s):
        q, k, v = qkv(s, 2048)
        return lambda: xattn.attention(q, k, v, num_threads=1)
    assert _runs_without_the_gil(forward)

    def backward(s):
        q, k, v = (x.requires_grad_() for x in qkv(s, 1024))
        return lambda: xattn.attention(q, k, v, num_threads=1).sum().backward()
    assert _runs_without_the_gil(backward)

    def varlen(s):
        packed = randn(4096 * s, 2, 64)
        cu = [4096 * i for i in range(s + 1)]
        return lambda: xattn.attention_varlen(packed, packed, packed, cu, cu, num_threads=1)
    assert _runs_without_the_gil(varlen)

    def layer_call(s):
        layer = MultiheadAttention(256, 4, batch_first=True)
        x = randn(s, 2048, 256)
        return lambda: layer(x, x, x, need_weights=False, num_threads=1)
    assert _runs_without_the_gil(layer_call)


def test_concurrent_calls_from_python_threads_match_sequential_results():
    """Eight threads call every entry point at once on shared read-only inputs (1 or 2 OpenMP
    threads each); every result has the bits of the same call made alone."""
    q, k, v = randn(2, 4, 67, 32), randn(2, 2, 131, 32, seed=1), randn(2, 2, 131, 32, seed=2)
    nq, nk = q.numpy(), k.numpy()
    mask = randn(67, 131, seed=3)
    layer = mha()
    Q, K, V = mha_inputs()

    def grads(threads):
        x = [t.clone().requires_grad_() for t in (q, k, v, mask)]
        xattn.attention(*x[:3], mask=x[3], causal=True, num_threads=threads).sum().backward()
        return [t.grad for t in x]

    jobs = [
        lambda t: [xattn.attention(q, k, v, mask=mask, return_weights=True, num_threads=t)[1]],
        lambda t: [xattn.attention(nq, nk, nk, causal=True, num_threads=t)],
        lambda t: [xattn.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), num_threads=t)],
        lambda t: [xattn.attention_varlen(q[0].transpose(0, 1), k[0].transpose(0, 1),
                                          v[0].transpose(0, 1), [0, 30, 67], [0, 100, 131],
                                          num_threads=t)],
        lambda t: list(xattn.merge(q[0], q[1, :, :, 0], q[1], q[0, :, :, 0])),
        grads,
        lambda t: [layer(Q, K, V, num_threads=t)[1]],
    ]
    expected = {(j, t): jobs[j](t) for j in range(len(jobs)) for t in (1, 2)}
    mismatches = []

    def work(w):
        for rep in range(3):
            for j in range(len(jobs)):
                t = 1 + (w + rep + j) % 2
                got = jobs[j](t)
                same = all(np.array_equal(np.asarray(a.float() if isinstance(a, torch.Tensor)
                                                     else a),
                                          np.asarray(b.float() if isinstance(b, torch.Tensor)
                                                     else b))
                           for a, b in zip(got, expected[(j, t)]))
                if not same:
                    mismatches.append((w, j, t))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mismatches
