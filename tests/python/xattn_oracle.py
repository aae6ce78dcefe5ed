"""The float64 oracle for the Python tests: attention written out in torch, independent of xattn.

Every visibility rule is an explicit boolean [B, Hq, Lq, Lk] tensor, so the oracle states the
semantics rather than re-deriving the library's key ranges. A row with no visible key gives
out = 0, lse = -inf, weights = 0.
"""

import math

import numpy as np
import torch


def to_f64(x):
    """A contiguous float64 torch copy of a numpy array or torch tensor (any dtype, any strides)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    return x.detach().to(torch.float64).contiguous()


def visibility(batch, heads, len_q, len_k, *, causal=False, window=None, align="top_left",
               kv_lens=None, q_lens=None):
    """bool [B, Hq, Lq, Lk]: which keys each query may see from lengths, causal and window."""
    i = torch.arange(len_q).view(len_q, 1)
    j = torch.arange(len_k).view(1, len_k)
    rows = []
    for b in range(batch):
        lq = len_q if q_lens is None else int(q_lens[b])
        lk = len_k if kv_lens is None else int(kv_lens[b])
        p = i if align == "top_left" else i + (lk - lq)  # the diagonal of row i
        vis = (j < lk) & (i < lq)
        if causal:
            vis = vis & (j <= p)
        if window is not None:
            left, right = window
            if left >= 0:
                vis = vis & (j >= p - left)
            if right >= 0:
                vis = vis & (j <= p + right)
        rows.append(vis)
    return torch.stack(rows).view(batch, 1, len_q, len_k).expand(batch, heads, len_q, len_k)


def softmax_attention(scores, visible, v):
    """(out, lse, weights) of softmax over the visible scores; empty rows give 0, -inf, 0.

    scores: [..., Lq, Lk] float64 (may hold -inf from a float mask); visible: bool, broadcasts;
    v: [..., Lk, Dv].
    """
    s = scores.masked_fill(~visible, -math.inf)
    row_max = s.amax(dim=-1, keepdim=True)
    empty = torch.isneginf(row_max)
    p = torch.exp(s - torch.where(empty, torch.zeros_like(row_max), row_max))
    p = torch.where(torch.isneginf(s), torch.zeros_like(p), p)  # exp(-inf) is 0, made explicit
    total = p.sum(dim=-1, keepdim=True)
    weights = torch.where(empty, torch.zeros_like(p), p / torch.where(empty, 1.0, total))
    out = weights @ v
    lse = torch.where(empty, torch.full_like(row_max, -math.inf),
                      row_max + torch.log(torch.where(empty, 1.0, total)))
    return out, lse.squeeze(-1), weights


def attention(q, k, v, *, mask=None, causal=False, window=None, align="top_left", scale=None,
              softcap=0.0, kv_lens=None, q_lens=None):
    """Oracle for xattn.attention on 4-D float64 tensors [B, H, L, D]; returns (out, lse, weights).

    mask: None, or a bool / float64 tensor broadcasting to [B, Hq, Lq, Lk].
    """
    batch, heads_q, len_q, dim = q.shape
    heads_kv, len_k = k.shape[1], k.shape[2]
    group = heads_q // heads_kv
    k = k.repeat_interleave(group, dim=1)  # query head h reads kv head h // group
    v = v.repeat_interleave(group, dim=1)
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    s = scale * (q @ k.transpose(-1, -2))
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    visible = visibility(batch, heads_q, len_q, len_k, causal=causal, window=window, align=align,
                         kv_lens=kv_lens, q_lens=q_lens)
    if mask is not None:
        if mask.dtype == torch.bool:
            visible = visible & mask
        else:
            s = s + mask
    return softmax_attention(s, visible, v)


def sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """torch 2.x scaled_dot_product_attention, transcribed from the reference code in PyTorch's
    documentation (torch 1.13 has no such function). Fully masked rows give NaN, as in torch.
    """
    len_q, len_k = query.size(-2), key.size(-2)
    scale_factor = 1 / math.sqrt(query.size(-1)) if scale is None else scale
    attn_bias = torch.zeros(len_q, len_k, dtype=query.dtype)
    if is_causal:
        temp_mask = torch.ones(len_q, len_k, dtype=torch.bool).tril(diagonal=0)
        attn_bias = attn_bias.masked_fill(temp_mask.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_bias = torch.where(attn_mask, attn_bias, torch.tensor(float("-inf"),
                                                                       dtype=query.dtype))
        else:
            attn_bias = attn_mask + attn_bias
    if enable_gqa:
        key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
        value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
    attn_weight = query @ key.transpose(-2, -1) * scale_factor
    attn_weight = attn_weight + attn_bias
    attn_weight = torch.softmax(attn_weight, dim=-1)
    return attn_weight @ value
