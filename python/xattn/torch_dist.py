"""Attention across processes over torch.distributed (gloo, CPU tensors), exact, with autograd.

    import torch.distributed as dist, xattn.torch_dist as xd
    dist.init_process_group("gloo")
    out = xd.attention_split_kv(q, k_shard, v_shard, causal=True)   # q replicated, keys sharded
    out = xd.ring_attention(q, k, v, causal=True, layout="zigzag")  # the sequence sharded

Masks, windows, lengths (kv_lens, q_lens: the whole problem's, the same on every rank), align
and diagonal_offset behave as on one process: a key's GLOBAL position decides what a query sees.
Each rank passes its own part of the mask: split-KV its keys' columns, ring its rows (in its
local order) with all L columns. The mask gets no gradient. Every call first checks its
arguments collectively (one all_gather_object), so bad input on any rank raises xattn.Error
naming the argument and the rank on every rank.
"""

from ._torch_dist_ring import ring_attention
from ._torch_dist_split_kv import attention_split_kv

__all__ = ["attention_split_kv", "ring_attention"]
