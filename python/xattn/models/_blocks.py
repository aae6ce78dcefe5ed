"""The transformer pieces the architectures share, as torch modules whose attention is one call
of xattn's kernel (with autograd through its fused backward).

Parameter names follow timm's ViT (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2) and
xattn.nn.Attention (q_proj, k_proj, v_proj, out_proj), so checkpoints load in the C++ twins
(src/models/) under the same names.
"""

import torch
from torch import nn

from .. import _attention


def split_heads(x, num_heads):
    """[B, L, H*D] -> the [B, H, L, D] view the kernel reads in place."""
    batch, length, width = x.shape
    return x.view(batch, length, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x):
    """[B, H, L, D] -> [B, L, H*D]."""
    batch, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * dim)


def attention(q, k, v, **options):
    """xattn.attention on [B, H, L, D] tensors, differentiable."""
    return _attention.attention(q, k, v, **options)


def check_tokens(x, arg, width, batch=None):
    """Raises ValueError naming `arg` unless x is a float tensor [B, L, width] (B = batch)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{arg}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[2] != width:
        raise ValueError(f"{arg}: expected [batch, length, {width}], got {list(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{arg}: expected batch {batch}, got {x.shape[0]}")


def check_divides(heads, width, arg):
    if heads < 1 or width % heads != 0:
        raise ValueError(f"{arg}: {heads} heads must divide the width {width}")


class Mlp(nn.Module):
    """fc2(gelu(fc1(x))): timm's Mlp."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """timm's ViT attention: one qkv projection, the heads as strided views of it, proj."""

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        check_divides(num_heads, dim, "num_heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, dim // self.num_heads)
        # [B, H, L, D] views; unbind, not indexing: its backward stacks the three gradients
        # into one tensor, where each index's would zero-fill a copy of all of qkv.
        q, k, v = (x.transpose(1, 2) for x in qkv.unbind(2))
        return self.proj(merge_heads(attention(q, k, v)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, eps=1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttention(nn.Module):
    """Queries from x [B, L, q_dim], keys and values from context [B, S, kv_dim]:
    out_proj(concat_h softmax(q_h k_hᵀ / sqrt(D)) v_h), all projections q_dim wide. The names
    and math of xattn.nn.Attention(input_widths=[q_dim, kv_dim], query=0, key=1, value=1)."""

    def __init__(self, q_dim, kv_dim, num_heads):
        super().__init__()
        check_divides(num_heads, q_dim, "num_heads")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(q_dim, q_dim)
        self.k_proj = nn.Linear(kv_dim, q_dim)
        self.v_proj = nn.Linear(kv_dim, q_dim)
        self.out_proj = nn.Linear(q_dim, q_dim)

    def forward(self, x, context, kv_lens=None):
        h = self.num_heads
        q = split_heads(self.q_proj(x), h)
        k = split_heads(self.k_proj(context), h)
        v = split_heads(self.v_proj(context), h)
        return self.out_proj(merge_heads(attention(q, k, v, kv_lens=kv_lens)))


class CrossAttentionBlock(nn.Module):
    """Perceiver's cross-attention block: x + attn(norm_q(x), norm_kv(context)), then
    + mlp(norm2(x)). Keys at positions >= kv_lens[b] are invisible to batch row b."""

    def __init__(self, q_dim, kv_dim, num_heads, mlp_ratio=4.0, eps=1e-5):
        super().__init__()
        self.norm_q = nn.LayerNorm(q_dim, eps=eps)
        self.norm_kv = nn.LayerNorm(kv_dim, eps=eps)
        self.attn = CrossAttention(q_dim, kv_dim, num_heads)
        self.norm2 = nn.LayerNorm(q_dim, eps=eps)
        self.mlp = Mlp(q_dim, int(q_dim * mlp_ratio))

    def forward(self, x, context, kv_lens=None):
        x = x + self.attn(self.norm_q(x), self.norm_kv(context), kv_lens)
        return x + self.mlp(self.norm2(x))


def projection(in_dim, out_dim, eps=1e-6):
    """CrossViT's width change between branches: LayerNorm, GELU, Linear (timm's projs)."""
    return nn.Sequential(nn.LayerNorm(in_dim, eps=eps), nn.GELU(), nn.Linear(in_dim, out_dim))
