"""The library writes its outputs exactly where the views say, and nowhere else.

Out-of-bounds writes corrupt the heap and crash much later, far from the cause; here every output
the package allocates is a strided view inside a larger buffer filled with a sentinel (a margin
before and after, and a gap after each row), and the margins must survive the call. Strided
outputs also exercise the library's output strides, which plain calls never use.
"""

import numpy as np
import pytest
import torch

import xattn
import xattn._arrays
from random_cases import from_float64, random_case
from test_attention_random import check_case
from test_varlen import random_varlen_case

SENTINEL = 1024.0  # exact in every dtype, and far from any output of these tests
GAP = 3


@pytest.fixture
def guarded(monkeypatch):
    """Makes the package allocate outputs inside sentinel-filled buffers; yields their list."""
    made = []
    original = xattn._arrays.empty

    def empty(kind, shape, dtype):
        shape = tuple(shape)
        if len(shape) < 2:
            return original(kind, shape, dtype)
        base = original(kind, (shape[0] + 2,) + shape[1:-1] + (shape[-1] + GAP,), dtype)
        base[...] = SENTINEL
        view = base[1:-1, ..., :shape[-1]]
        made.append((base, view.shape))
        return view

    monkeypatch.setattr(xattn._arrays, "empty", empty)
    return made


def assert_margins_untouched(made, context):
    for base, shape in made:
        outside = np.ones(tuple(base.shape), dtype=bool)
        outside[1:-1, ..., :shape[-1]] = False
        values = np.asarray(base.float() if isinstance(base, torch.Tensor) else base,
                            dtype=np.float64)[outside]
        written = np.nonzero(values != SENTINEL)[0]
        assert written.size == 0, (f"output of shape {tuple(shape)}: {written.size} elements "
                                   f"written outside the view; {context}")


@pytest.mark.parametrize("seed", range(20_000, 20_080))
def test_dense_outputs_stay_in_bounds(seed, guarded):
    case = random_case(seed)
    check_case(case)  # also checks the values written through the strided views
    assert_margins_untouched(guarded, case.describe())


@pytest.mark.parametrize("left,causal", [(4, False), (2, True), (0, False)])
def test_window_beyond_the_last_key_stays_in_bounds(left, causal, guarded):
    # Lq > Lk with a left window: late rows' windows start past the last key.
    rng = np.random.default_rng(0)
    q = from_float64(rng.standard_normal((1, 2, 49, 17)), "torch", "float32")
    k = from_float64(rng.standard_normal((1, 1, 7, 17)), "torch", "float32")
    xattn.attention(q, k, k, window=(left, -1), causal=causal, return_lse=True,
                    return_weights=True)
    assert_margins_untouched(guarded, f"window=({left}, -1) causal={causal}")


@pytest.mark.parametrize("seed", range(30))
def test_varlen_outputs_stay_in_bounds(seed, guarded):
    c = random_varlen_case(seed)
    kw = dict(c["kw"], return_lse=True, return_weights=True)
    xattn.attention_varlen(c["q"], c["k"], c["v"], c["cu_q"], c["cu_k"], **kw)
    assert_margins_untouched(guarded, c["desc"])


def test_merge_outputs_stay_in_bounds(guarded):
    rng = np.random.default_rng(0)
    out_a, out_b = rng.standard_normal((2, 2, 3, 5, 7)).astype(np.float32)
    lse_a, lse_b = rng.standard_normal((2, 2, 3, 5)).astype(np.float32)
    xattn.merge(out_a, lse_a, out_b, lse_b)
    assert_margins_untouched(guarded, "merge")
