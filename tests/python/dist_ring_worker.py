"""Run by every rank under mpirun (test_dist.py): xattn.dist.ring_attention and its backward on
numpy arrays. Every rank builds the whole sequence from one seed, takes its rows under the
layout, and compares its out, lse, dq, dk and dv with the float64 oracle (xattn_oracle, through
torch autograd) and with one process's xattn.attention (torch autograd); then bad input that must
raise on every rank. Prints "rank R: N checks passed" and exits 0, or raises."""

import numpy as np
import torch
from mpi4py import MPI

import xattn
import xattn.dist
import xattn_oracle as oracle

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
B, H, HKV, D = 2, 4, 2, 8
CLOSE64 = dict(rtol=1e-4, atol=2e-5)  # f32 results against float64 math
CLOSE = dict(rtol=1e-5, atol=1e-5)    # against one process's f32 kernel
checks = 0


def my_rows(length, layout):
    """This rank's rows of the sequence, in local order."""
    if layout == "zigzag":
        chunk = length // (2 * size)
        return np.r_[rank * chunk:(rank + 1) * chunk,
                     (2 * size - 1 - rank) * chunk:(2 * size - rank) * chunk]
    weights = [0 if (r == 1 and size > 2) else r + 1 for r in range(size)]  # uneven, one empty
    cuts = [length * sum(weights[:r]) // sum(weights) for r in range(size)] + [length]
    return np.arange(cuts[rank], cuts[rank + 1])


def make_mask(rng, kind, length):
    """The whole sequence's mask: a float [B, H, L, L] one with -inf entries, or a bool [L, L]
    one; either way row 3 sees no key."""
    if kind == "float":
        mask = rng.standard_normal((B, H, length, length)).astype(np.float32)
        mask[rng.random(mask.shape) < 0.2] = -np.inf
        mask[:, :, 3] = -np.inf
        return mask
    mask = rng.random((length, length)) < 0.8
    mask[3] = False
    return mask


def check_case(seed, layout, length, mask=None, **kw):
    global checks
    rng = np.random.default_rng(seed)  # the same on every rank
    q = rng.standard_normal((B, H, length, D)).astype(np.float32)
    k = rng.standard_normal((B, HKV, length, D)).astype(np.float32)
    v = rng.standard_normal((B, HKV, length, D)).astype(np.float32)
    dout = rng.standard_normal((B, H, length, D)).astype(np.float32)
    whole_mask = make_mask(rng, mask, length) if mask else None
    rows = my_rows(length, layout)
    mine = [np.ascontiguousarray(x[:, :, rows]) for x in (q, k, v, dout)]
    if whole_mask is not None:  # this rank's rows of it, every key
        kw["mask"] = np.ascontiguousarray(whole_mask[..., rows, :])
    out, lse = xattn.dist.ring_attention(*mine[:3], comm, layout=layout, **kw)
    dq, dk, dv = xattn.dist.ring_attention_backward(*mine[:3], out, lse, mine[3], comm,
                                                    layout=layout, **kw)
    if whole_mask is not None:
        kw["mask"] = torch.from_numpy(whole_mask)
    # The float64 oracle, and one process's kernel, over the whole sequence, through autograd.
    for dtype, tol in ((torch.float64, CLOSE64), (torch.float32, CLOSE)):
        leaves = [torch.from_numpy(x).to(dtype).requires_grad_() for x in (q, k, v)]
        if dtype == torch.float64:
            mask64 = kw.get("mask")
            if mask64 is not None and mask64.dtype != torch.bool:
                mask64 = mask64.to(dtype)
            want, want_lse, _ = oracle.attention(*leaves, **dict(kw, mask=mask64))
        else:
            want, want_lse = xattn.attention(*leaves, return_lse=True, **kw)
        want.backward(torch.from_numpy(dout).to(dtype))
        for name, got, ref in (("out", out, want), ("lse", lse, want_lse),
                               ("dq", dq, leaves[0].grad), ("dk", dk, leaves[1].grad),
                               ("dv", dv, leaves[2].grad)):
            np.testing.assert_allclose(got, ref.detach().numpy()[:, :, rows], **tol,
                                       err_msg=f"{name} {layout} {kw} against {dtype}")
    checks += 1


def expect_error(what, expect, exc, call):
    global checks
    try:
        call()
    except exc as e:
        assert expect in str(e), f"{what}: {e!r} lacks {expect!r}"
        checks += 1
        return
    raise AssertionError(f"{what}: no error")


L = 12 * size  # zigzag: 2P chunks of 6 rows
check_case(1, "contiguous", 37)
check_case(2, "contiguous", 37, causal=True)
check_case(3, "zigzag", L, causal=True)
check_case(4, "zigzag", L, window=(3, 2))
check_case(5, "contiguous", 37, causal=True, window=(5, 0), softcap=3.0)
check_case(6, "zigzag", L, mask="float", causal=True)
check_case(7, "contiguous", 37, mask="bool", kv_lens=[30, 0], q_lens=[37, 20])
check_case(8, "zigzag", L, causal=True, align="bottom_right", kv_lens=[L - 2, L - 7],
           q_lens=[L - 5, L - 1])

x = np.random.default_rng(9).standard_normal((1, 2, 6, D)).astype(np.float32)
last = size - 1
expect_error("a list for q on the last rank", "TypeError" if rank != last else "q:",
             TypeError if rank == last else xattn.Error,
             lambda: xattn.dist.ring_attention(x.tolist() if rank == last else x, x, x, comm))
expect_error("a bad layout on the last rank", "layout", ValueError,
             lambda: xattn.dist.ring_attention(x, x, x, comm,
                                               layout="spiral" if rank == last else "zigzag"))
y = x[..., :4].copy() if rank == last else x
expect_error("a different head dim on the last rank", "D (head dim)", xattn.Error,
             lambda: xattn.dist.ring_attention(y, y, y, comm))
# Still in step: a good call after the bad ones.
out, _ = xattn.dist.ring_attention(x, x, x, comm, causal=True)
assert out.shape == x.shape
checks += 1
print(f"rank {rank}: {checks} checks passed", flush=True)
