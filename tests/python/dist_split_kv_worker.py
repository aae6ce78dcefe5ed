"""Run by every rank under mpirun (test_dist.py): xattn.dist.attention_split_kv on numpy arrays
against the float64 oracle (xattn_oracle) and xattn.attention over all keys, then bad input
that must raise on every rank. Prints "rank R: N checks passed" and exits 0, or raises.
Then attention_split_kv_backward likewise, against both through torch autograd; prints
"rank R: N backward checks passed"."""

import sys

import numpy as np
import torch
from mpi4py import MPI

import xattn
import xattn.dist
import xattn_oracle as oracle

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
B, H, HKV, LQ, LK, D = 2, 4, 2, 11, 37, 8
checks = 0
backward_checks = 0
CLOSE64 = dict(rtol=1e-4, atol=2e-5)  # f32 gradients against float64 math (dist_ring_worker.py)
CLOSE = dict(rtol=1e-5, atol=1e-5)    # against one process's f32 kernel


def shard(length, empty_rank=True):
    """Uneven shards in rank order; rank 1 is empty from 3 ranks on (unless not empty_rank)."""
    weights = [0 if (r == 1 and size > 2 and empty_rank) else r + 1 for r in range(size)]
    cuts = [length * sum(weights[:r]) // sum(weights) for r in range(size)] + [length]
    return slice(cuts[rank], cuts[rank + 1])


def check_case(seed, **kw):
    global checks
    rng = np.random.default_rng(seed)  # the same on every rank
    q = rng.standard_normal((B, H, LQ, D)).astype(np.float32)
    k = rng.standard_normal((B, HKV, LK, D)).astype(np.float32)
    v = rng.standard_normal((B, HKV, LK, D)).astype(np.float32)
    mask = rng.standard_normal((B, 1, LQ, LK)).astype(np.float32) if kw.pop("mask", False) else None
    keys = shard(LK)
    out, lse = xattn.dist.attention_split_kv(
        q, k[:, :, keys], v[:, :, keys], comm, return_lse=True,
        mask=None if mask is None else mask[..., keys], **kw)
    want, want_lse, _ = oracle.attention(*(torch.from_numpy(x).double() for x in (q, k, v)),
                                         mask=None if mask is None else torch.from_numpy(mask).double(),
                                         **kw)
    # The oracle's tolerance for f32 (tests/python/random_cases.py): 1e-5 of max|V|, 1e-5 for lse.
    tol = 1e-5 * np.abs(v).max() + 1e-7
    np.testing.assert_allclose(out, want.numpy(), atol=tol, rtol=0, err_msg=str(kw))
    np.testing.assert_allclose(lse, want_lse.numpy(), atol=1e-5, rtol=1e-5, err_msg=str(kw))
    whole = xattn.attention(q, k, v, mask=mask, **kw)
    np.testing.assert_allclose(out, whole, atol=2 * tol, rtol=0, err_msg=str(kw))
    gathered = comm.allgather(out.tobytes() + lse.tobytes())
    assert all(g == gathered[0] for g in gathered), "ranks hold different bits"
    checks += 1


def check_backward_case(seed, empty_rank=True, **kw):
    """dq (alike on every rank) and this shard's dk, dv against the oracle's and one process's
    xattn.attention's gradients over all keys, through torch autograd. Without an empty rank,
    3 ranks add 3 non-zero dq shares, whose bits depend on the order (the same on every rank)."""
    global backward_checks
    rng = np.random.default_rng(seed)  # the same on every rank
    q = rng.standard_normal((B, H, LQ, D)).astype(np.float32)
    k = rng.standard_normal((B, HKV, LK, D)).astype(np.float32)
    v = rng.standard_normal((B, HKV, LK, D)).astype(np.float32)
    dout = rng.standard_normal((B, H, LQ, D)).astype(np.float32)
    mask = rng.standard_normal((B, 1, LQ, LK)).astype(np.float32) if kw.pop("mask", False) else None
    keys = shard(LK, empty_rank)
    mine = dict(kw, mask=None if mask is None else mask[..., keys])
    out, lse = xattn.dist.attention_split_kv(q, k[:, :, keys], v[:, :, keys], comm,
                                             return_lse=True, **mine)
    dq, dk, dv = xattn.dist.attention_split_kv_backward(q, k[:, :, keys], v[:, :, keys], out, lse,
                                                        dout, comm, **mine)
    whole_mask = None if mask is None else torch.from_numpy(mask)
    for dtype, tol in ((torch.float64, CLOSE64), (torch.float32, CLOSE)):
        leaves = [torch.from_numpy(x).to(dtype).requires_grad_() for x in (q, k, v)]
        m = None if whole_mask is None else whole_mask.to(dtype)
        if dtype == torch.float64:
            want = oracle.attention(*leaves, mask=m, **kw)[0]
        else:
            want = xattn.attention(*leaves, mask=m, **kw)
        want.backward(torch.from_numpy(dout).to(dtype))
        for name, got, ref in (("dq", dq, leaves[0].grad), ("dk", dk, leaves[1].grad[:, :, keys]),
                               ("dv", dv, leaves[2].grad[:, :, keys])):
            np.testing.assert_allclose(got, ref.numpy(), **tol,
                                       err_msg=f"{name} {kw} against {dtype}")
    gathered = comm.allgather(dq.tobytes())
    assert all(g == gathered[0] for g in gathered), "ranks hold different bits of dq"
    backward_checks += 1


def expect_error(what, expect, exc, call, counter="checks"):
    try:
        call()
    except exc as e:
        assert expect in str(e), f"{what}: {e!r} lacks {expect!r}"
        globals()[counter] += 1
        return
    raise AssertionError(f"{what}: no error")


check_case(1)
check_case(2, causal=True)
check_case(3, causal=True, align="bottom_right", kv_lens=[30, 6], q_lens=[11, 4])
check_case(4, window=(3, 2))
check_case(5, mask=True)

rng = np.random.default_rng(9)
q = rng.standard_normal((B, H, LQ, D)).astype(np.float32)
k = rng.standard_normal((B, HKV, LK, D)).astype(np.float32)
keys = shard(LK)
last = size - 1
# A wrong type on the last rank: it raises TypeError, the others xattn.Error naming it.
bad_q = q.tolist() if rank == last else q
expect_error("a list for q on the last rank",
             "TypeError" if rank != last else "q:",
             TypeError if rank == last else xattn.Error,
             lambda: xattn.dist.attention_split_kv(bad_q, k[:, :, keys], k[:, :, keys], comm))
# A different head dim on the last rank (q and k alike): the ranks disagree.
q8, k8 = (q[..., :4], k[..., :4]) if rank == last else (q, k)
expect_error("head dim 4 on the last rank", f"D (head dim) is 8 on rank 0 but 4 on rank {last}",
             xattn.Error,
             lambda: xattn.dist.attention_split_kv(q8, k8[:, :, keys], k8[:, :, keys], comm))
# Still in step: a good call.
check_case(6, causal=True)
print(f"rank {rank}: {checks} checks passed")

check_backward_case(11, empty_rank=False)
check_backward_case(12, causal=True, align="bottom_right", kv_lens=[30, 6], q_lens=[11, 4])
check_backward_case(13, window=(3, 2), softcap=4.0)
check_backward_case(14, mask=True, causal=True)
# dout of another shape on rank 1: every rank raises, naming it.
out, lse = xattn.dist.attention_split_kv(q, k[:, :, keys], k[:, :, keys], comm, return_lse=True)
dout = np.ones(out.shape[:2] + (LQ - 1 if rank == 1 else LQ, D), np.float32)
expect_error("dout of another shape on rank 1",
             f"rank 1 of {size} rejected its arguments: dout:", xattn.Error,
             lambda: xattn.dist.attention_split_kv_backward(q, k[:, :, keys], k[:, :, keys], out,
                                                            lse, dout, comm),
             counter="backward_checks")
# No lse on the last rank (checked in Python): it raises ValueError, the others xattn.Error.
dout = np.ones_like(out)
expect_error("lse None on the last rank", "lse: is required", ValueError,
             lambda: xattn.dist.attention_split_kv_backward(q, k[:, :, keys], k[:, :, keys], out,
                                                            None if rank == last else lse, dout,
                                                            comm),
             counter="backward_checks")
# Still in step.
check_backward_case(15, causal=True)
print(f"rank {rank}: {backward_checks} backward checks passed")
sys.stdout.flush()
