"""xattn.scaled_dot_product_attention vs PyTorch 2.x's documented math (float64)."""

import numpy as np
import pytest
import torch

import xattn
import xattn_oracle as oracle
from random_cases import TOLERANCE, assert_close, from_float64, make_array, max_abs
from xattn_oracle import to_f64

NUM_CASES = 60


def random_sdpa_case(seed):
    rng = np.random.default_rng(seed)
    framework = "numpy" if rng.random() < 0.2 else "torch"
    dtype = str(rng.choice(["float32", "float16"] + (["bfloat16"] if framework == "torch" else [])))
    rank = int(rng.choice([2, 3, 4], p=[0.1, 0.4, 0.5]))
    enable_gqa = rank >= 3 and bool(rng.random() < 0.4)
    heads_kv = int(rng.integers(1, 4))
    heads_q = heads_kv * (int(rng.choice([1, 2, 3])) if enable_gqa else 1)
    batch = int(rng.integers(1, 3))
    len_q, len_k = int(rng.choice([1, 7, 17, 33])), int(rng.choice([1, 8, 17, 65]))
    dim, dim_v = int(rng.choice([7, 16, 64])), int(rng.choice([7, 16, 64]))
    lead_q, lead_k = [(batch, heads_q), (heads_q,), ()][4 - rank], [(batch, heads_kv),
                                                                    (heads_kv,), ()][4 - rank]
    layout = str(rng.choice(["contiguous", "permuted", "sliced"]))
    normal = rng.standard_normal
    query = make_array(normal, lead_q + (len_q, dim), framework, dtype, layout)
    key = make_array(normal, lead_k + (len_k, dim), framework, dtype, layout)
    value = make_array(normal, lead_k + (len_k, dim_v), framework, dtype, layout)
    kw = dict(is_causal=bool(rng.random() < 0.4), enable_gqa=enable_gqa)
    if rng.random() < 0.3:
        kw["scale"] = float(np.float32(rng.uniform(0.05, 1.0)))
    if rng.random() < 0.6:
        target = lead_q + (len_q, len_k)
        mask_rank = int(rng.integers(1, len(target) + 1))
        shape = tuple(t if rng.random() < 0.6 else 1 for t in target[len(target) - mask_rank:])
        if rng.random() < 0.5:
            kw["attn_mask"] = from_float64(rng.random(shape) < 0.85, framework, "bool")
        else:
            kw["attn_mask"] = from_float64(rng.standard_normal(shape), framework, dtype)
    desc = (f"seed={seed} {framework}/{dtype} q{tuple(query.shape)} k{tuple(key.shape)} "
            f"v{tuple(value.shape)} {layout} "
            f"{ {k: v for k, v in kw.items() if k != 'attn_mask'} } mask="
            f"{None if 'attn_mask' not in kw else (kw['attn_mask'].dtype, kw['attn_mask'].shape)}")
    return query, key, value, kw, dtype, desc


@pytest.mark.parametrize("seed", range(NUM_CASES))
def test_sdpa_matches_torch_math(seed):
    query, key, value, kw, dtype, desc = random_sdpa_case(seed)
    out = xattn.scaled_dot_product_attention(query, key, value, **kw)
    assert type(out) is type(query) and out.dtype == query.dtype, desc

    ref_kw = dict(kw)
    if "attn_mask" in kw:
        mask = kw["attn_mask"]
        ref_kw["attn_mask"] = (torch.as_tensor(mask) if mask.dtype in (np.bool_, torch.bool)
                               else to_f64(mask))
    ref = oracle.sdpa(to_f64(query), to_f64(key), to_f64(value), **ref_kw)
    # torch gives NaN for a row that sees no key; xattn documents 0 instead.
    ref = torch.nan_to_num(ref, nan=0.0)
    assert_close("out", out, ref, TOLERANCE[dtype] * max_abs(value), desc)


def test_sdpa_fully_masked_row_is_zero_not_nan():
    q, k, v = (torch.randn(1, 2, 3, 8) for _ in range(3))
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[1] = False
    out = xattn.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(out[:, :, 1], torch.zeros(1, 2, 8))
    assert not torch.isnan(out).any()


def test_sdpa_is_top_left_causal():
    # Lq < Lk: top-left alignment means query 0 sees only key 0 (bottom-right would see more).
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 3)
    out = xattn.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(out[0, 0, 0], v[0, 0, 0], atol=1e-6)


def test_sdpa_heads_must_match_without_gqa():
    q, k = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 3, 8)
    with pytest.raises(ValueError, match="enable_gqa"):
        xattn.scaled_dot_product_attention(q, k, k)
    out = xattn.scaled_dot_product_attention(q, k, k, enable_gqa=True)
    assert out.shape == (1, 4, 3, 8)


@pytest.mark.parametrize("dropout_p", [0.1, 1.0])
def test_sdpa_dropout_not_supported(dropout_p):
    q = torch.randn(1, 1, 2, 4)
    with pytest.raises((NotImplementedError, ValueError), match="dropout is not supported yet"):
        xattn.scaled_dot_product_attention(q, q, q, dropout_p=dropout_p)
