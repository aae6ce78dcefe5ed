"""Randomized xattn.attention calls against the float64 oracle, over every option at once."""

import numpy as np
import pytest
import torch

import xattn
import xattn_oracle as oracle
from random_cases import (TOLERANCE, assert_close, lse_tolerance, max_abs, oracle_inputs,
                          random_case)

NUM_CASES = 260


def check_case(case):
    kw = case.kwargs
    result = xattn.attention(case.q, case.k, case.v, **kw)
    extras = kw["return_lse"] or kw["return_weights"]
    results = list(result) if extras else [result]
    assert len(results) == 1 + kw["return_lse"] + kw["return_weights"], case.describe()
    out = results.pop(0)
    lse = results.pop(0) if kw["return_lse"] else None
    weights = results.pop(0) if kw["return_weights"] else None

    # Outputs come back as the input's kind and dtype (lse: float32).
    expected_type = np.ndarray if case.framework == "numpy" else torch.Tensor
    for name, x in (("out", out), ("lse", lse), ("weights", weights)):
        if x is not None:
            assert type(x) is expected_type, f"{name}: {type(x)}; {case.describe()}"
    assert out.dtype == case.q.dtype and (weights is None or weights.dtype == case.q.dtype)
    assert lse is None or lse.dtype in (np.float32, torch.float32)

    q, k, v = oracle_inputs(case)
    ref_out, ref_lse, ref_w = oracle.attention(q, k, v, **case.oracle_kwargs)
    if case.three_d:
        ref_out, ref_lse, ref_w = ref_out[:, 0], ref_lse[:, 0], ref_w[:, 0]
    tol = TOLERANCE[case.dtype]
    context = case.describe()
    assert_close("out", out, ref_out, tol * max(max_abs(case.v), 1e-30), context)
    if lse is not None:
        assert_close("lse", lse, ref_lse, lse_tolerance(ref_lse), context)
    if weights is not None:
        assert_close("weights", weights, ref_w, tol, context)


@pytest.mark.parametrize("seed", range(NUM_CASES))
def test_random_attention(seed):
    check_case(random_case(seed))


def _targets():
    return [t for t in xattn.available_simd_targets() if t != xattn.simd_target()]


@pytest.fixture
def restore_simd_target():
    yield
    xattn.force_simd_target("")


# Every other compiled-in SIMD target runs a share of the cases too.
@pytest.mark.parametrize("target", _targets())
@pytest.mark.parametrize("seed", range(10_000, 10_030))
def test_random_attention_other_simd_targets(target, seed, restore_simd_target):
    xattn.force_simd_target(target)
    assert xattn.simd_target() == target
    check_case(random_case(seed))
