"""xattn.merge: attention over two key halves, merged, equals attention over all keys."""

import math

import numpy as np
import pytest
import torch

import xattn
import xattn_oracle as oracle
from random_cases import TOLERANCE, assert_close, from_float64, lse_tolerance, make_array, max_abs
from xattn_oracle import to_f64

NUM_CASES = 40


@pytest.mark.parametrize("seed", range(NUM_CASES))
def test_merge_of_key_halves_equals_full(seed):
    rng = np.random.default_rng(seed)
    framework = str(rng.choice(["torch", "numpy"]))
    dtype = str(rng.choice(["float32", "float16"] + (["bfloat16"] if framework == "torch" else [])))
    batch, heads, len_q = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.choice([1, 7, 17]))
    len_k, dim, dim_v = int(rng.choice([2, 17, 65])), int(rng.choice([8, 17])), int(rng.choice([5, 16]))
    split = int(rng.integers(1, len_k))
    layout = str(rng.choice(["contiguous", "permuted", "sliced"]))
    normal = rng.standard_normal
    q = make_array(normal, (batch, heads, len_q, dim), framework, dtype, layout)
    k = make_array(normal, (batch, heads, len_k, dim), framework, dtype, layout)
    v = make_array(normal, (batch, heads, len_k, dim_v), framework, dtype, layout)
    # A sparse bool mask leaves some rows with no visible key in one half or in both.
    mask = from_float64(rng.random((batch, 1, len_q, len_k)) < float(rng.choice([0.2, 0.9])),
                        framework, "bool")
    desc = f"seed={seed} {framework}/{dtype} q{tuple(q.shape)} k{tuple(k.shape)} split={split}"

    halves = []
    for keys in (slice(0, split), slice(split, len_k)):
        halves += xattn.attention(q, k[:, :, keys], v[:, :, keys], mask=mask[..., keys],
                                  return_lse=True)
    out, lse = xattn.merge(*halves)
    assert type(out) is type(q) and out.dtype == q.dtype and lse.dtype in (np.float32, torch.float32)

    ref_out, ref_lse, _ = oracle.attention(to_f64(q), to_f64(k), to_f64(v),
                                           mask=torch.as_tensor(mask))
    # Each half is rounded to the 16-bit dtype before merging and the merge rounds again, so a
    # 16-bit result may carry two roundings: twice the single-call tolerance.
    tol = TOLERANCE[dtype] * (1 if dtype == "float32" else 2)
    assert_close("out", out, ref_out, tol * max_abs(v), desc)
    assert_close("lse", lse, ref_lse, lse_tolerance(ref_lse), desc)


def test_merge_with_empty_sides():
    """A side with lse = -inf contributes nothing; both empty gives 0 and -inf."""
    out_a = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    lse_a = np.array([0.5, -math.inf, -math.inf], dtype=np.float32)
    out_b = np.array([[5.0, 6.0], [7.0, 8.0], [0.0, 0.0]], dtype=np.float32)
    lse_b = np.array([-math.inf, 1.5, -math.inf], dtype=np.float32)
    out, lse = xattn.merge(out_a, lse_a, out_b, lse_b)
    np.testing.assert_array_equal(out, [[1.0, 2.0], [7.0, 8.0], [0.0, 0.0]])
    np.testing.assert_array_equal(lse, [0.5, 1.5, -math.inf])


def test_merge_formula():
    rng = np.random.default_rng(1)
    out_a, out_b = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    lse_a, lse_b = rng.standard_normal((2, 3, 4)).astype(np.float32)
    out, lse = xattn.merge(out_a, lse_a, out_b, lse_b)
    a, b = lse_a.astype(np.float64), lse_b.astype(np.float64)
    m = np.maximum(a, b)
    wa, wb = np.exp(a - m), np.exp(b - m)
    ref = (wa[..., None] * out_a + wb[..., None] * out_b) / (wa + wb)[..., None]
    np.testing.assert_allclose(out, ref, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(lse, m + np.log(wa + wb), atol=1e-5 * (1 + np.abs(m).max()))
