"""Promises of the Python API that the randomized tests do not state outright: empty rows, masked
keys never read, output kinds, 3-D inputs, determinism, threads, the runtime functions."""

import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import xattn
import xattn_oracle as oracle
from xattn_oracle import to_f64


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def assert_empty_row(out, lse, weights, index):
    """A row that sees no key: out 0, lse -inf, weights 0 (never NaN)."""
    assert torch.all(out[index] == 0), out[index]
    assert lse[index] == -math.inf
    assert torch.all(weights[index] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rows_that_see_no_key(dtype):
    q, k, v = randn(2, 2, 4, 8, dtype=dtype), randn(2, 1, 6, 8, dtype=dtype, seed=1), \
        randn(2, 1, 6, 3, dtype=dtype, seed=2)
    # kv_lens = 0 empties every row of batch 0.
    out, lse, w = xattn.attention(q, k, v, kv_lens=[0, 6], return_lse=True, return_weights=True)
    for h in range(2):
        for i in range(4):
            assert_empty_row(out, lse, w, (0, h, i))
    assert torch.all(lse[1] > -math.inf)
    # q_lens: rows past the valid length output zeros.
    out, lse, w = xattn.attention(q, k, v, q_lens=[4, 1], return_lse=True, return_weights=True)
    assert_empty_row(out, lse, w, (1, 0, 3))
    # A bool mask row of all False, and a float mask row of all -inf.
    bool_mask = torch.ones(4, 6, dtype=torch.bool)
    bool_mask[2] = False
    float_mask = torch.zeros(4, 6, dtype=dtype)
    float_mask[1] = -math.inf
    for mask, row in ((bool_mask, 2), (float_mask, 1)):
        out, lse, w = xattn.attention(q, k, v, mask=mask, return_lse=True, return_weights=True)
        assert_empty_row(out, lse, w, (0, 1, row))
    # Bottom-right causal with Lq > Lk: the first Lq - Lk rows see nothing.
    q7 = randn(1, 1, 7, 8, dtype=dtype, seed=3)
    out, lse, w = xattn.attention(q7, k[:1], v[:1], causal=True, align="bottom_right",
                                  kv_lens=[5], return_lse=True, return_weights=True)
    assert_empty_row(out, lse, w, (0, 0, 0))
    assert_empty_row(out, lse, w, (0, 0, 1))
    assert lse[0, 0, 2] > -math.inf
    # A window that lies beyond the keys.
    out, lse, w = xattn.attention(q7, k[:1], v[:1], window=(0, 0), return_lse=True,
                                  return_weights=True)
    assert_empty_row(out, lse, w, (0, 0, 6))


def test_masked_keys_are_never_read():
    """NaN/inf in keys and values that are masked out must not reach the result (0·NaN = NaN)."""
    q, k, v = randn(2, 2, 5, 8), randn(2, 2, 9, 8, seed=1), randn(2, 2, 9, 4, seed=2)
    clean_k, clean_v = k.clone(), v.clone()
    kv_lens = [6, 9]
    k[0, :, 6:], v[0, :, 6:] = math.nan, math.inf  # beyond kv_lens[0]
    mask = torch.ones(5, 9, dtype=torch.bool)
    mask[:, 3] = False
    k[:, :, 3], v[:, :, 3] = math.nan, math.nan  # masked by the bool mask
    out = xattn.attention(q, k, v, kv_lens=kv_lens, mask=mask, causal=True, align="bottom_right")
    ref, _, _ = oracle.attention(to_f64(q), to_f64(clean_k), to_f64(clean_v), kv_lens=kv_lens,
                                 mask=mask, causal=True, align="bottom_right")
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out.double(), ref, atol=1e-5 * 5, rtol=0)


def test_float_mask_minus_inf_keys_are_never_read():
    q, k, v = randn(1, 1, 3, 8), randn(1, 1, 5, 8, seed=1), randn(1, 1, 5, 4, seed=2)
    clean_v = v.clone()
    v[:, :, 4] = math.nan
    mask = torch.zeros(3, 5)
    mask[:, 4] = -math.inf
    out = xattn.attention(q, k, v, mask=mask)
    ref, _, _ = oracle.attention(to_f64(q), to_f64(k), to_f64(clean_v), mask=to_f64(mask))
    assert not torch.isnan(out).any(), out
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("framework,dtype", [("numpy", np.float32), ("numpy", np.float16),
                                             ("torch", torch.float32), ("torch", torch.float16),
                                             ("torch", torch.bfloat16)])
def test_outputs_have_the_input_kind_and_dtype(framework, dtype):
    x = randn(1, 2, 3, 4)
    x = x.numpy().astype(dtype) if framework == "numpy" else x.to(dtype)
    out, lse, w = xattn.attention(x, x, x, return_lse=True, return_weights=True)
    kind = np.ndarray if framework == "numpy" else torch.Tensor
    assert all(type(a) is kind for a in (out, lse, w))
    assert out.dtype == dtype and w.dtype == dtype
    assert lse.dtype in (np.float32, torch.float32)
    assert tuple(out.shape) == (1, 2, 3, 4) and tuple(lse.shape) == (1, 2, 3)
    assert tuple(w.shape) == (1, 2, 3, 3)


def test_return_order_and_single_output():
    q = randn(1, 1, 2, 4)
    assert isinstance(xattn.attention(q, q, q), torch.Tensor)
    out, w = xattn.attention(q, q, q, return_weights=True)
    assert w.shape == (1, 1, 2, 2)
    out, lse = xattn.attention(q, q, q, return_lse=True)
    assert lse.shape == (1, 1, 2)


def test_three_d_inputs_are_one_head():
    q, k, v = randn(2, 5, 8), randn(2, 7, 8, seed=1), randn(2, 7, 3, seed=2)
    mask = randn(2, 5, 7, seed=3) > 0  # [B, Lq, Lk]: gets a head dim
    out, lse, w = xattn.attention(q, k, v, mask=mask, return_lse=True, return_weights=True)
    assert out.shape == (2, 5, 3) and lse.shape == (2, 5) and w.shape == (2, 5, 7)
    out4, lse4, w4 = xattn.attention(q[:, None], k[:, None], v[:, None], mask=mask[:, None],
                                     return_lse=True, return_weights=True)
    assert torch.equal(out, out4[:, 0]) and torch.equal(lse, lse4[:, 0]) and torch.equal(w, w4[:, 0])
    # A 2-D mask [Lq, Lk] broadcasts over the batch as it is.
    out2 = xattn.attention(q, k, v, mask=mask[0])
    out2_ref = xattn.attention(q, k, v, mask=mask[:1].expand(2, 5, 7))
    assert torch.equal(out2, out2_ref)


def test_inputs_are_not_modified():
    q, k, v = randn(1, 2, 3, 4), randn(1, 2, 5, 4, seed=1), randn(1, 2, 5, 4, seed=2)
    copies = [x.clone() for x in (q, k, v)]
    xattn.attention(q, k, v, causal=True, return_lse=True, return_weights=True)
    assert all(torch.equal(a, b) for a, b in zip((q, k, v), copies))


def test_tensors_requiring_grad_give_the_same_values_with_a_graph():
    q = randn(1, 1, 3, 4).requires_grad_()
    out = xattn.attention(q, q, q)
    assert out.requires_grad  # gradients: test_autograd.py
    ref = xattn.attention(q.detach(), q.detach(), q.detach())
    assert torch.equal(out.detach(), ref)


def test_same_inputs_same_bits_and_threads_agree():
    q, k, v = randn(2, 4, 65, 64), randn(2, 2, 129, 64, seed=1), randn(2, 2, 129, 32, seed=2)
    results = {}
    for threads in (1, 2, 3, 0):
        first = xattn.attention(q, k, v, causal=True, num_threads=threads)
        again = xattn.attention(q, k, v, causal=True, num_threads=threads)
        assert torch.equal(first, again), f"num_threads={threads} is not deterministic"
        results[threads] = first
    for threads, out in results.items():
        torch.testing.assert_close(out, results[1], atol=1e-5 * float(v.abs().max()), rtol=0)


def test_calls_from_several_python_threads():
    """The binding releases the GIL; concurrent calls must each get their own right answer."""
    inputs = [(randn(1, 2, 33, 16, seed=s), randn(1, 2, 40, 16, seed=s + 100),
               randn(1, 2, 40, 8, seed=s + 200)) for s in range(6)]
    expected = [xattn.attention(*x, num_threads=1) for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(5):
            results[i] = xattn.attention(*inputs[i], num_threads=1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(r, e) for r, e in zip(results, expected))


def test_numpy_views_with_negative_and_zero_strides():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((1, 2, 6, 8)).astype(np.float32)
    q = base[:, :, ::-1]  # negative stride along L
    k = np.broadcast_to(base[:, :1], (1, 2, 6, 8))  # stride 0 along H
    out = xattn.attention(q, k, k)
    ref = xattn.attention(np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(k))
    np.testing.assert_array_equal(out, ref)


def test_runtime_functions():
    assert isinstance(xattn.version(), str) and xattn.version()
    targets = xattn.available_simd_targets()
    assert targets and all(isinstance(t, str) for t in targets)
    assert xattn.simd_target() in targets
    assert xattn.default_num_threads() >= 1
    default = xattn.simd_target()
    try:
        for target in targets:
            xattn.force_simd_target(target)
            assert xattn.simd_target() == target
    finally:
        xattn.force_simd_target("")
    assert xattn.simd_target() == default
    with pytest.raises(ValueError):
        xattn.force_simd_target("NOT_A_TARGET")
    assert xattn.simd_target() == default


def test_public_functions_have_docstrings():
    for name in xattn.__all__:
        obj = getattr(xattn, name)
        assert obj.__doc__ and obj.__doc__.strip(), name


def test_works_without_torch():
    """torch is optional: with it blocked, import and numpy calls still work."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, xattn\n"
            "x = np.ones((1, 1, 2, 4), np.float32)\n"
            "assert xattn.attention(x, x, x).shape == (1, 1, 2, 4)\n"
            "try:\n    xattn.attention([1], x, x)\nexcept TypeError:\n    pass\n"
            "else:\n    raise SystemExit('no TypeError')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_import_does_not_import_torch():
    code = "import sys, xattn; assert 'torch' not in sys.modules"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_probabilities_stay_within_their_documented_bound(causal):
    """Opt-in bf16 weights: each weight is rounded to bf16 (2^-9 relative), so an output moves by
    at most 2^-9 * max|v| from the float64 result (plus the bf16 output's own rounding, 2^-9 of
    the value, and f32 arithmetic). Without the option the error stays f32-sized."""
    q, k, v = (randn(1, 4, 200, 64, dtype=torch.bfloat16, seed=s) for s in (1, 2, 3))
    want = oracle.attention(to_f64(q), to_f64(k), to_f64(v), causal=causal)[0]
    max_v = to_f64(v).abs().max()
    fast = to_f64(xattn.attention(q, k, v, causal=causal, bf16_probabilities=True))
    exact = to_f64(xattn.attention(q.float(), k.float(), v.float(), causal=causal))
    assert (fast - want).abs().max() <= 2**-9 * max_v + 2**-9 * want.abs().max() + 1e-5 * max_v
    assert (exact - want).abs().max() <= 1e-5 * max_v


def test_bf16_probabilities_must_be_a_bool():
    q = randn(1, 1, 4, 8, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="bf16_probabilities"):
        xattn.attention(q, q, q, bf16_probabilities=1)


def _cpu_info():
    """The CPU's flags and vendor, read from /proc/cpuinfo (empty where there is none)."""
    flags, vendor = set(), ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags |= set(line.split())
                if line.startswith("vendor_id"):
                    vendor = line.split(":")[1].strip()
    return flags, vendor


def test_bf16_dot_products_follow_the_cpu_and_the_target():
    """AVX-512 BF16 is used exactly when the CPU reports it, an AVX-512 target is in use, and
    the CPU is one whose dot products outrun its f32 FMAs (AMD's; Intel's Xeons run them at
    half the rate); forcing it on or off overrides only the last."""
    flags, vendor = _cpu_info()
    try:
        for target in xattn.available_simd_targets():
            xattn.force_simd_target(target)
            has = "avx512_bf16" in flags and target.startswith("AVX3")
            assert xattn.bf16_dot_products() == (has and vendor != "GenuineIntel"), target
            xattn.force_bf16_dot_products("on")
            assert xattn.bf16_dot_products() == has, target
            xattn.force_bf16_dot_products("off")
            assert not xattn.bf16_dot_products(), target
            xattn.force_bf16_dot_products("auto")
    finally:
        xattn.force_simd_target("")
        xattn.force_bf16_dot_products("auto")
    assert xattn.bf16_dot_reason()
    if vendor == "GenuineIntel":
        assert "Intel" in xattn.cpu_name()


def test_both_bf16_paths_give_the_same_answer_within_bf16_rounding():
    q, k, v = (randn(1, 2, 40, 64, seed=s).to(torch.bfloat16) for s in (1, 2, 3))
    try:
        results = []
        for mode in ("on", "off"):
            xattn.force_bf16_dot_products(mode)
            results.append(xattn.attention(q, k, v).float())
    finally:
        xattn.force_bf16_dot_products("auto")
    torch.testing.assert_close(results[0], results[1], atol=2e-2, rtol=0)


def test_force_bf16_dot_products_refuses_other_modes():
    with pytest.raises(ValueError, match="mode must be 'auto', 'on' or 'off', got 'yes'"):
        xattn.force_bf16_dot_products("yes")
    with pytest.raises(TypeError, match="mode: must be a str"):
        xattn.force_bf16_dot_products(1)
