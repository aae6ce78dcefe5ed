"""Attention across processes over MPI (mpi4py), for numpy arrays: exact by log-sum-exp.

    from mpi4py import MPI
    import xattn.dist
    out = xattn.dist.attention_split_kv(q, k_shard, v_shard, MPI.COMM_WORLD, causal=True)

Needs xattn built where MPI was found (its _xattn_dist extension) and mpi4py. Run under mpirun.
"""

import numpy as np

from . import _arrays as A
from ._attention import _check_mask, _check_qkv, _params

try:
    from . import _xattn_dist
except ImportError as e:  # built without MPI
    raise ImportError("xattn.dist: this xattn was built without MPI (no _xattn_dist extension); "
                      "install Open MPI (libopenmpi-dev) and rebuild") from e


def _comm_handle(comm):
    from mpi4py import MPI
    if comm is None:
        return MPI.COMM_WORLD.py2f()
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm: expected an mpi4py communicator, got {type(comm).__name__}")
    return comm.py2f()


def attention_split_kv(q, k_shard, v_shard, comm=None, *, mask=None, causal=False, window=None,
                       align="top_left", scale=None, softcap=0.0, kv_lens=None, q_lens=None,
                       diagonal_offset=0, return_lse=False, num_threads=0,
                       bf16_probabilities=False):
    """Cross-attention over keys split across the ranks of `comm` (default COMM_WORLD); every
    rank gets the exact result over all keys, with the same bits on every rank.

    Args:
      q: [B, Hq, Lq, D] numpy array (float32 or float16), the same on every rank.
      k_shard, v_shard: [B, Hkv, n_r, D] and [B, Hkv, n_r, Dv]: this rank's keys, which come
        after those of lower ranks (rank order is key order); n_r may differ, and be 0.
      comm: an mpi4py intracommunicator.
      mask: this rank's columns of the whole mask, broadcasting to [B, Hq, Lq, n_r].
      causal, window, align, diagonal_offset: as in xattn.attention, over GLOBAL key positions.
      kv_lens: the whole sequence's valid key counts; q_lens as in xattn.attention.
      Everything but mask and num_threads must be the same on every rank.

    Returns:
      out [B, Hq, Lq, Dv] in q's dtype, or (out, lse) with return_lse (lse float32 [B, Hq, Lq]).

    Raises:
      xattn.Error (a ValueError) on EVERY rank when any rank's arguments are invalid or the
      ranks disagree, naming the argument and the rank; the rank at fault raises its own error
      (TypeError for a wrong type). Nothing waits forever on a bad argument.
    """
    handle = _comm_handle(comm)  # a wrong comm cannot reach the other ranks anyway
    try:
        kind = _check_qkv(q, k_shard, v_shard)
        if kind != A.NUMPY:
            raise TypeError("q: xattn.dist takes numpy arrays (torch tensors: a later version)")
        _check_mask(kind, mask)
        A.check_bool(return_lse, "return_lse")
        for x, arg in ((q, "q"), (k_shard, "k_shard"), (v_shard, "v_shard")):
            if x.ndim != 4:
                raise ValueError(f"{arg}: expected 4-D [B, H, L, D], got shape {tuple(x.shape)}")
        params = _params(mask, causal, window, align, scale, softcap, kv_lens, q_lens,
                         num_threads, bf16_probabilities, diagonal_offset)
        batch, heads, len_q, _ = q.shape
        out = A.empty(kind, (batch, heads, len_q, v_shard.shape[3]), q.dtype)
        lse = A.empty(kind, (batch, heads, len_q), np.float32) if return_lse else None
        specs = (A.spec(q, "q"), A.spec(k_shard, "k_shard"), A.spec(v_shard, "v_shard"))
        out_spec, lse_spec = A.spec(out, "out"), A.optional_spec(lse, "lse")
    except (TypeError, ValueError) as e:
        # The other ranks are in the collective checks already: tell them, then raise ours.
        try:
            _xattn_dist.reject_split_kv(handle, f"{type(e).__name__}: {e}")
        except ValueError:
            pass
        raise
    _xattn_dist.attention_split_kv(*specs, params, handle, out_spec, lse_spec)
    return (out, lse) if return_lse else out
