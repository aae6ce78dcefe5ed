"""Wrong types raise TypeError; bad shapes and values raise ValueError naming the argument."""

import numpy as np
import pytest
import torch

import xattn


def t(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


def n(*shape, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


Q, K, V = t(2, 4, 3, 8), t(2, 2, 5, 8), t(2, 2, 5, 6)


@pytest.mark.parametrize("args,kwargs,name", [
    (([[1.0]], K, V), {}, "q"),
    ((Q, 3, V), {}, "k"),
    ((Q, K, "v"), {}, "v"),
    ((n(1, 1, 2, 4, dtype=np.float64),) * 3, {}, "q"),  # float64
    ((t(1, 1, 2, 4, dtype=torch.int32),) * 3, {}, "q"),  # int tensor
    ((t(1, 1, 2, 4, dtype=torch.float64),) * 3, {}, "q"),
    ((torch.zeros(1, 1, 2, 4, device="meta"),) * 3, {}, "q"),  # not on the CPU (as CUDA would be)
    ((Q, K.numpy(), V), {}, "k"),  # numpy mixed with torch
    ((n(1, 1, 2, 4), n(1, 1, 2, 4), t(1, 1, 2, 4)), {}, "v"),
    ((Q, K.half(), V), {}, "k"),  # dtypes differ
    ((Q, K, V.bfloat16()), {}, "v"),
    ((n(1, 1, 2, 4).astype(">f4"),) * 3, {}, "q"),  # byte-swapped
    ((Q, K, V), {"mask": n(3, 5)}, "mask"),  # numpy mask with torch inputs
    ((Q, K, V), {"mask": t(3, 5, dtype=torch.float64)}, "mask"),
    ((Q, K, V), {"mask": t(3, 5, dtype=torch.int64)}, "mask"),
    ((Q, K, V), {"mask": [[True]]}, "mask"),
    ((Q, K, V), {"kv_lens": [1.5, 2.0]}, "kv_lens"),
    ((Q, K, V), {"kv_lens": 3}, "kv_lens"),
    ((Q, K, V), {"kv_lens": torch.tensor([1.0, 2.0])}, "kv_lens"),
    ((Q, K, V), {"q_lens": np.array([1.0, 2.0])}, "q_lens"),
    ((Q, K, V), {"window": (1.5, 2)}, "window"),
    ((Q, K, V), {"scale": "0.5"}, "scale"),
    ((Q, K, V), {"softcap": None}, "softcap"),
    ((Q, K, V), {"align": 1}, "align"),
    ((Q, K, V), {"num_threads": 1.5}, "num_threads"),
])
def test_wrong_types_raise_type_error(args, kwargs, name):
    with pytest.raises(TypeError, match=rf"^{name}\b"):
        xattn.attention(*args, **kwargs)


@pytest.mark.parametrize("args,kwargs,name", [
    ((t(4, 3, 8), K, V), {}, "k"),  # 3-D q with 4-D k
    ((t(2, 4, 3, 8, 1), K, V), {}, "q"),
    ((t(8), K, V), {}, "q"),
    ((Q, t(2, 2, 5, 7), V), {}, "k"),  # D differs
    ((Q, K, t(2, 2, 4, 6)), {}, "v"),  # Lk differs
    ((Q, t(3, 2, 5, 8), V), {}, "k"),  # B differs
    ((t(2, 3, 3, 8), K, V), {}, "q"),  # Hq not a multiple of Hkv
    ((t(2, 4, 3, 0), t(2, 2, 5, 0), V), {}, "q"),  # D = 0 (zero counts: test_edge_cases.py)
    ((Q, K, V), {"mask": t(3, 4, dtype=torch.bool)}, "mask"),  # does not broadcast
    ((Q, K, V), {"mask": t(2, 4, 3, 5, 1)}, "mask"),
    ((Q, K, V), {"align": "center"}, "align"),
    ((Q, K, V), {"window": (-2, 0)}, "window"),
    ((Q, K, V), {"window": (1, 2, 3)}, "window"),
    ((Q, K, V), {"window": 4}, "window"),
    ((Q, K, V), {"kv_lens": [1, 6]}, "kv_lens"),  # > Lk
    ((Q, K, V), {"kv_lens": [1]}, "kv_lens"),  # not one per batch
    ((Q, K, V), {"q_lens": [-1, 2]}, "q_lens"),
    ((Q, K, V), {"softcap": -1.0}, "softcap"),
    ((Q, K, V), {"scale": float("nan")}, "scale"),
    ((Q, K, V), {"num_threads": -1}, "num_threads"),
])
def test_bad_shapes_and_values_raise_value_error_naming_the_argument(args, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        xattn.attention(*args, **kwargs)


def test_library_errors_are_xattn_error():
    with pytest.raises(xattn.Error, match="^k"):
        xattn.attention(Q, t(2, 2, 5, 7), V)
    assert issubclass(xattn.Error, ValueError)


def test_numpy_strides_not_a_multiple_of_the_item_size():
    buf = np.zeros(4 * 3 * 8 + 1, dtype=np.uint8)[1:].view(np.float32)  # misaligned
    q = buf.reshape(1, 1, 3, 8)
    odd = np.lib.stride_tricks.as_strided(n(1, 1, 4, 8), (1, 1, 3, 8), (128, 128, 30, 4))
    for bad in (q, odd):
        with pytest.raises(ValueError, match="^q"):
            xattn.attention(bad, n(1, 1, 3, 8), n(1, 1, 3, 8))


def test_varlen_bad_input():
    q, k = t(5, 2, 8), t(7, 1, 8)
    with pytest.raises(ValueError, match="^cu_seqlens_q"):
        xattn.attention_varlen(q, k, k, [0, 2, 4], [0, 3, 7])  # does not end at total_q
    with pytest.raises(ValueError, match="^cu_seqlens_k"):
        xattn.attention_varlen(q, k, k, [0, 2, 5], [0, 4, 3])  # decreasing
    with pytest.raises(ValueError, match="^q"):
        xattn.attention_varlen(t(1, 5, 2, 8), k, k, [0, 5], [0, 7])
    with pytest.raises(TypeError, match="^cu_seqlens_k"):
        xattn.attention_varlen(q, k, k, [0, 5], [0.0, 7.0])
    with pytest.raises(TypeError):
        xattn.attention_varlen(q, k, k, [0, 5], [0, 7], kv_lens=[7])  # not a keyword of varlen


def test_merge_bad_input():
    out, lse = n(2, 3, 4), n(2, 3)
    with pytest.raises(ValueError, match="^out_b"):
        xattn.merge(out, lse, n(2, 3, 5), lse)
    with pytest.raises(TypeError, match="^lse_b"):
        xattn.merge(out, lse, out, lse.astype(np.float64))
    with pytest.raises(TypeError, match="^out_b"):
        xattn.merge(out, lse, torch.zeros(2, 3, 4), lse)
    with pytest.raises(TypeError, match="^out_b"):
        xattn.merge(out, lse, out.astype(np.float16), lse)


def test_sdpa_bad_input():
    q = t(1, 2, 3, 8)
    with pytest.raises((NotImplementedError, ValueError), match="dropout is not supported yet"):
        xattn.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    with pytest.raises(ValueError, match="enable_gqa"):
        xattn.scaled_dot_product_attention(q, t(1, 1, 3, 8), t(1, 1, 3, 8))
    with pytest.raises(TypeError, match="^key"):
        xattn.scaled_dot_product_attention(q, [0.0], q)
    with pytest.raises(ValueError):
        xattn.scaled_dot_product_attention(q, t(1, 2, 3, 9), q)


def test_force_simd_target_bad_input():
    with pytest.raises(TypeError):
        xattn.force_simd_target(3)
    with pytest.raises(ValueError):
        xattn.force_simd_target("NO_SUCH_TARGET")
