"""A drop-in for torch.nn.functional.scaled_dot_product_attention (PyTorch 2.x semantics)."""

import numbers

from . import _arrays as A
from ._attention import attention


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """torch.nn.functional.scaled_dot_product_attention, computed by xattn on the CPU.

    Args:
      query: [N, H, L, E] or [N, L, E] (also [L, E]); key: [..., Hkv, S, E];
        value: [..., Hkv, S, Ev]. CPU torch tensors (float32, float16, bfloat16) or numpy arrays
        (float32, float16); all of one kind and dtype, any strides.
      attn_mask: optional, broadcasting to [..., L, S]. bool: True = may attend (as in torch);
        float: added to the scores.
      dropout_p: must be 0; dropout is not supported yet.
      is_causal: top-left causal mask (query i sees keys j <= i), as in torch. May be combined
        with attn_mask (both apply).
      scale: multiplies query @ key^T; default 1 / sqrt(E).
      enable_gqa: allow Hq to be a multiple of Hkv (grouped-query attention). Without it the head
        counts (dim -3) must be equal.

    Returns:
      [..., H, L, Ev] in the input's kind and dtype.

    Differences from torch: a query row that sees no key at all (fully masked) returns zeros,
    where torch returns NaN. Accumulation is float32 for every input dtype.
    """
    if isinstance(dropout_p, (str, bytes, bool)) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"dropout_p: expected a real number, got {type(dropout_p).__name__}")
    if dropout_p != 0.0:
        raise NotImplementedError("scaled_dot_product_attention: dropout is not supported yet "
                                  f"(dropout_p must be 0, got {dropout_p})")
    # Type errors name torch's argument names; attention() then checks that they agree.
    for x, arg in ((query, "query"), (key, "key"), (value, "value")):
        A.kind_of(x, arg)
        A.check_dtype(x, arg, A.FLOAT_DTYPES)
    if attn_mask is not None:
        A.kind_of(attn_mask, "attn_mask")
        A.check_dtype(attn_mask, "attn_mask", A.MASK_DTYPES)
    A.check_bool(is_causal, "is_causal")
    A.check_bool(enable_gqa, "enable_gqa")
    rank = query.ndim
    if rank not in (2, 3, 4) or key.ndim != rank or value.ndim != rank:
        raise ValueError("scaled_dot_product_attention: query, key and value must all be 2-D, "
                         f"3-D or 4-D, got shapes {tuple(query.shape)}, {tuple(key.shape)}, "
                         f"{tuple(value.shape)}")
    if not enable_gqa and rank > 2 and query.shape[-3] != key.shape[-3]:
        raise ValueError(f"key: number of heads {key.shape[-3]} (dim -3) must equal query's "
                         f"{query.shape[-3]} unless enable_gqa=True")
    # Leading dims of size 1 make everything 4-D; torch's right-aligned mask broadcasting and its
    # head dim (-3) then line up with xattn's [B, H, L, D] as they are.
    pad = 4 - rank
    q, k, v = query, key, value
    for _ in range(pad):
        q, k, v = A.unsqueeze(q, 0), A.unsqueeze(k, 0), A.unsqueeze(v, 0)
    out = attention(q, k, v, mask=attn_mask, causal=is_causal, scale=scale)
    for _ in range(pad):
        out = out[0]
    return out
