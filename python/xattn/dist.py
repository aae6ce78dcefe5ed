"""Attention across processes over MPI (mpi4py), for numpy arrays: exact by log-sum-exp.

    from mpi4py import MPI
    import xattn.dist
    out = xattn.dist.attention_split_kv(q, k_shard, v_shard, MPI.COMM_WORLD, causal=True)
    out, lse = xattn.dist.attention_split_kv(q, k_shard, v_shard, return_lse=True)
    dq, dk, dv = xattn.dist.attention_split_kv_backward(q, k_shard, v_shard, out, lse, dout)
    out, lse = xattn.dist.ring_attention(q, k, v, MPI.COMM_WORLD, causal=True, layout="zigzag")
    dq, dk, dv = xattn.dist.ring_attention_backward(q, k, v, out, lse, dout, MPI.COMM_WORLD,
                                                    causal=True, layout="zigzag")

Needs xattn built where MPI was found (its _xattn_dist extension) and mpi4py. Run under mpirun.
"""

import numpy as np

from . import _arrays as A
from ._attention import _check_kind, _check_mask, _check_qkv, _params

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
        _check_4d(kind, (q, "q"), (k_shard, "k_shard"), (v_shard, "v_shard"))
        _check_mask(kind, mask)
        A.check_bool(return_lse, "return_lse")
        params = _params(mask, causal, window, align, scale, softcap, kv_lens, q_lens,
                         num_threads, bf16_probabilities, diagonal_offset)
        batch, heads, len_q, _ = q.shape
        out = A.empty(kind, (batch, heads, len_q, v_shard.shape[3]), q.dtype)
        lse = A.empty(kind, (batch, heads, len_q), np.float32) if return_lse else None
        specs = (A.spec(q, "q"), A.spec(k_shard, "k_shard"), A.spec(v_shard, "v_shard"))
        out_spec, lse_spec = A.spec(out, "out"), A.optional_spec(lse, "lse")
    except (TypeError, ValueError) as e:
        _reject(handle, e)
        raise
    _xattn_dist.attention_split_kv(*specs, params, handle, out_spec, lse_spec)
    return (out, lse) if return_lse else out


def attention_split_kv_backward(q, k_shard, v_shard, out, lse, dout, comm=None, *, mask=None,
                                causal=False, window=None, align="top_left", scale=None,
                                softcap=0.0, kv_lens=None, q_lens=None, diagonal_offset=0,
                                num_threads=0, bf16_probabilities=False):
    """Gradients of attention_split_kv: given its q, k_shard, v_shard and keywords, the out and
    lse it returned (the whole result, the same on every rank; float32 out is the most exact)
    and dout, the loss's gradient with respect to out (the same on every rank: out is
    replicated, so compute the loss alike everywhere), returns (dq, dk, dv) in q's dtype:
    dq [B, Hq, Lq, D] the whole problem's, with the same bits on every rank; dk and dv this
    rank's shard's. The mask gets no gradient. Every rank must call it; errors as
    attention_split_kv."""
    handle = _comm_handle(comm)
    try:
        kind = _check_qkv(q, k_shard, v_shard)
        _check_given(kind, (out, "out"), (lse, "lse"), (dout, "dout"))
        _check_4d(kind, (q, "q"), (k_shard, "k_shard"), (v_shard, "v_shard"), (out, "out"),
                  (dout, "dout"))
        _check_mask(kind, mask)
        params = _params(mask, causal, window, align, scale, softcap, kv_lens, q_lens,
                         num_threads, bf16_probabilities, diagonal_offset)
        grads = [A.empty(kind, x.shape, q.dtype) for x in (q, k_shard, v_shard)]
        specs = [A.spec(x, arg) for x, arg in ((q, "q"), (k_shard, "k_shard"),
                                               (v_shard, "v_shard"), (out, "out"), (lse, "lse"),
                                               (dout, "dout"))]
        grad_specs = [A.spec(g, arg) for g, arg in zip(grads, ("dq", "dk", "dv"))]
    except (TypeError, ValueError) as e:
        _reject(handle, e)
        raise
    _xattn_dist.attention_split_kv_backward(*specs, params, handle, *grad_specs)
    return tuple(grads)


def _check_given(kind, *arrays):
    """The forward's results and dout: arrays like q's, of a dtype the binding can take (a
    failure inside the binding would leave the other ranks waiting)."""
    for x, arg in arrays:
        if x is None:
            raise ValueError(f"{arg}: is required, got None")
        _check_kind(kind, x, arg, "q")
        A.check_dtype(x, arg, A.FLOAT_DTYPES)


def _reject(handle, e):
    """The other ranks are in the collective checks already: tells them this rank's error."""
    try:
        _xattn_dist.reject_call(handle, f"{type(e).__name__}: {e}")
    except ValueError:
        pass


def _check_layout(layout):
    if not isinstance(layout, str) or layout not in ("contiguous", "zigzag"):
        raise ValueError(f"layout: expected 'contiguous' or 'zigzag', got {layout!r}")


def _check_4d(kind, *arrays):
    if kind != A.NUMPY:
        raise TypeError("q: xattn.dist takes numpy arrays (torch tensors: xattn.torch_dist)")
    for x, arg in arrays:
        if x.ndim != 4:
            raise ValueError(f"{arg}: expected 4-D [B, H, n, D], got shape {tuple(x.shape)}")


def _ring_params(kind, layout, mask, causal, window, align, scale, softcap, kv_lens, q_lens,
                 diagonal_offset, num_threads):
    _check_layout(layout)
    _check_mask(kind, mask)
    return _params(mask, causal, window, align, scale, softcap, kv_lens, q_lens, num_threads,
                   False, diagonal_offset)


def ring_attention(q, k, v, comm=None, *, mask=None, causal=False, window=None,
                   align="top_left", scale=None, softcap=0.0, kv_lens=None, q_lens=None,
                   diagonal_offset=0, layout="contiguous", num_threads=0):
    """Self-attention over a sequence whose rows are split across the ranks of `comm` (default
    COMM_WORLD): each rank gets its rows of the exact result, and their lse for the backward.

    Args:
      q, k, v: [B, Hq, n, D], [B, Hkv, n, D], [B, Hkv, n, Dv] numpy arrays (float32 or float16):
        this rank's rows. layout "contiguous": rank r holds rows o_r .. o_r + n_r - 1 (n_r may
        differ, and be 0); "zigzag": the sequence is cut into 2P equal chunks and rank r holds
        chunks r and 2P - 1 - r, concatenated, which balances causal work.
      mask: this rank's rows of the whole sequence's mask (in its local row order), every key:
        broadcasting to [B, Hq, n, L], bool or float, as xattn.attention's.
      causal, window, align, scale, softcap, diagonal_offset: as in xattn.attention over the
        whole sequence (global positions).
      kv_lens, q_lens: the whole sequence's valid lengths per batch, as in xattn.attention.
      Everything but mask and num_threads must be the same on every rank.

    Returns:
      (out, lse): out [B, Hq, n, Dv] in q's dtype, lse [B, Hq, n] float32.

    Raises:
      xattn.Error on EVERY rank when any rank's arguments are invalid or the ranks disagree (the
      rank at fault raises its own error: TypeError for a wrong type).
    """
    handle = _comm_handle(comm)
    try:
        kind = _check_qkv(q, k, v)
        _check_4d(kind, (q, "q"), (k, "k"), (v, "v"))
        params = _ring_params(kind, layout, mask, causal, window, align, scale, softcap, kv_lens,
                              q_lens, diagonal_offset, num_threads)
        out = A.empty(kind, q.shape[:3] + (v.shape[3],), q.dtype)
        lse = A.empty(kind, q.shape[:3], np.float32)
        specs = (A.spec(q, "q"), A.spec(k, "k"), A.spec(v, "v"))
        out_spec, lse_spec = A.spec(out, "out"), A.spec(lse, "lse")
    except (TypeError, ValueError) as e:
        _reject(handle, e)
        raise
    _xattn_dist.ring_attention(*specs, params, handle, layout, out_spec, lse_spec)
    return out, lse


def ring_attention_backward(q, k, v, out, lse, dout, comm=None, *, mask=None, causal=False,
                            window=None, align="top_left", scale=None, softcap=0.0, kv_lens=None,
                            q_lens=None, diagonal_offset=0, layout="contiguous", num_threads=0):
    """Gradients of ring_attention: given this rank's q, k, v, the out and lse ring_attention
    returned, and dout (the loss's gradient with respect to this rank's out), returns this
    rank's (dq, dk, dv), exact, in q's dtype. Every rank must call it, with the forward's
    arguments; errors as ring_attention. The mask gets no gradient."""
    handle = _comm_handle(comm)
    try:
        kind = _check_qkv(q, k, v)
        _check_4d(kind, (q, "q"), (k, "k"), (v, "v"), (out, "out"), (dout, "dout"))
        params = _ring_params(kind, layout, mask, causal, window, align, scale, softcap, kv_lens,
                              q_lens, diagonal_offset, num_threads)
        grads = [A.empty(kind, x.shape, q.dtype) for x in (q, k, v)]
        specs = [A.spec(x, arg) for x, arg in ((q, "q"), (k, "k"), (v, "v"), (out, "out"),
                                               (lse, "lse"), (dout, "dout"))]
        grad_specs = [A.spec(g, arg) for g, arg in zip(grads, ("dq", "dk", "dv"))]
    except (TypeError, ValueError) as e:
        _reject(handle, e)
        raise
    _xattn_dist.ring_attention_backward(*specs, params, handle, layout, *grad_specs)
    return tuple(grads)
