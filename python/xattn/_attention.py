"""attention, attention_varlen and merge: check types, allocate outputs, call the binding.

Shapes are validated by the C++ library (its ValueError names the argument); this layer only
checks what the library cannot see: Python types, array kinds and dtypes.
"""

import numbers
import operator

from . import _arrays as A
from . import _autograd
from . import _xattn


def _check_qkv(q, k, v):
    """The kind (numpy / torch) shared by q, k, v; TypeError unless they agree in kind and dtype."""
    kind = A.kind_of(q, "q")
    dtype = A.check_dtype(q, "q", A.FLOAT_DTYPES)
    for x, arg in ((k, "k"), (v, "v")):
        _check_kind(kind, x, arg, "q")
        if A.check_dtype(x, arg, A.FLOAT_DTYPES) != dtype:
            raise TypeError(f"{arg}: dtype {x.dtype} differs from q's dtype {q.dtype}")
    return kind


def _check_kind(kind, x, arg, first_arg):
    other = A.kind_of(x, arg)
    if other != kind:
        names = {A.NUMPY: "a numpy array", A.TORCH: "a torch tensor"}
        raise TypeError(f"{arg}: is {names[other]} but {first_arg} is {names[kind]}; "
                        "do not mix numpy and torch")


def _check_mask(kind, mask):
    if mask is not None:
        _check_kind(kind, mask, "mask", "q")
        A.check_dtype(mask, "mask", A.MASK_DTYPES)


def _real(x, arg):
    if isinstance(x, (str, bytes, bool)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{arg}: expected a real number, got {type(x).__name__}")
    return float(x)


def _int(x, arg, bits=64):
    """x as a Python int that fits a signed C integer of `bits` bits (the binding's type)."""
    if isinstance(x, bool):
        raise TypeError(f"{arg}: expected an int, got bool")
    try:
        value = operator.index(x)
    except TypeError:
        raise TypeError(f"{arg}: expected an int, got {type(x).__name__}") from None
    return A.check_int_range(value, arg, bits)


def _params(mask, causal, window, align, scale, softcap, kv_lens, q_lens, num_threads,
            bf16_probabilities, diagonal_offset=0):
    p = _xattn.Params()
    p.scale = None if scale is None else _real(scale, "scale")
    p.softcap = _real(softcap, "softcap")
    p.causal = A.check_bool(causal, "causal")
    if not isinstance(align, str):
        raise TypeError(f"align: expected 'top_left' or 'bottom_right', got {type(align).__name__}")
    p.align = align  # the value is checked by the binding
    if window is not None:
        try:
            left, right = window
        except (TypeError, ValueError):
            raise ValueError(f"window: expected a pair (left, right), got {window!r}") from None
        p.window_left, p.window_right = _int(left, "window"), _int(right, "window")
    p.kv_lens = A.int_list(kv_lens, "kv_lens")
    p.q_lens = A.int_list(q_lens, "q_lens")
    p.mask = A.optional_spec(mask, "mask")
    p.num_threads = _int(num_threads, "num_threads", bits=32)
    p.bf16_probabilities = A.check_bool(bf16_probabilities, "bf16_probabilities")
    p.diagonal_offset = _int(diagonal_offset, "diagonal_offset")
    return p


def _result(out, lse, weights, return_lse, return_weights):
    if not (return_lse or return_weights):
        return out
    return (out,) + ((lse,) if return_lse else ()) + ((weights,) if return_weights else ())


def attention(q, k, v, *, mask=None, causal=False, window=None, align="top_left", scale=None,
              softcap=0.0, kv_lens=None, q_lens=None, return_lse=False, return_weights=False,
              num_threads=0, bf16_probabilities=False, diagonal_offset=0):
    """Fused attention: out = softmax(scale * q @ k^T + mask) @ v, accumulated in float32.

    Args:
      q: [B, Hq, Lq, D]; k: [B, Hkv, Lk, D]; v: [B, Hkv, Lk, Dv]. numpy arrays (float32, float16)
        or CPU torch tensors (float32, float16, bfloat16), all of one kind and dtype, any strides
        (permuted and sliced views are read in place). Hq must be a multiple of Hkv (grouped-query
        attention: query head h reads kv head h // (Hq // Hkv)). 3-D inputs [B, L, D] are one
        head; their outputs then have no head dim either.
      mask: optional array of the same kind, broadcasting to [B, Hq, Lq, Lk] (to [B, Lq, Lk] for
        3-D inputs). bool: True = may attend. float32/float16/bfloat16: added to the score, -inf
        masks the key.
      causal: key j is visible to query i only if j <= p, where p = i ("top_left") or
        p = i + kv_len - q_len ("bottom_right", per batch, after kv_lens / q_lens).
      window: (left, right): only keys p - left <= j <= p + right are visible; -1 = unbounded.
      align: "top_left" or "bottom_right", the diagonal p used by causal and window.
      diagonal_offset: added to p, for a call over part of a longer sequence: queries that start
        at global row r and keys that start at global key o of a top-left problem pass r - o.
      scale: multiplies q @ k^T; default 1 / sqrt(D).
      softcap: if > 0, scores s become softcap * tanh(s / softcap) (after scale, before masks).
      kv_lens: per-batch valid key counts (length B); keys j >= kv_lens[b] are invisible.
      q_lens: per-batch valid query counts; rows i >= q_lens[b] output zeros (lse -inf).
      return_lse: also return the log-sum-exp of the scaled scores, float32 [B, Hq, Lq].
      return_weights: also return the softmax weights [B, Hq, Lq, Lk] in the input dtype.
      Gradients: torch tensors with requires_grad get an autograd node: out's gradient flows
        into q, k, v and a float mask (the C++ attention_backward); lse and weights are not
        differentiable.
      num_threads: 0 = the library's default (see default_num_threads()).
      bf16_probabilities: for bfloat16 inputs, round the softmax weights to bfloat16 before they
        weight v, as FlashAttention and PyTorch do: faster with AVX-512 BF16, and at most
        2^-9 * max|v| more error per output element. Off: float32 arithmetic throughout.

    Returns:
      out [B, Hq, Lq, Dv] of the input's kind and dtype, or the tuple (out, lse?, weights?) with
      the requested extras in that order. A query that sees no key gets out = 0, lse = -inf and
      weights = 0 (never NaN). Empty inputs (B, H, Lq or Lk of 0) give empty results, or with
      Lk = 0 rows that see no key; D and Dv must be >= 1.

    Raises:
      TypeError: an argument has the wrong type or dtype (flags must be bools), or numpy and
        torch are mixed.
      ValueError (xattn.Error for the library's checks): shapes or values are invalid, an
        integer does not fit the library's C type, or an output (the weights of long sequences,
        say) could never fit in memory; the message names the argument.
    """
    kind = _check_qkv(q, k, v)
    _check_mask(kind, mask)
    A.check_bool(return_lse, "return_lse"), A.check_bool(return_weights, "return_weights")
    one_head = q.ndim == 3
    if one_head:
        for x, arg in ((k, "k"), (v, "v")):
            if x.ndim != 3:
                raise ValueError(f"{arg}: q is 3-D [B, L, D] so {arg} must be 3-D too, "
                                 f"got shape {tuple(x.shape)}")
        # One head: view [B, L, D] as [B, 1, L, D]. A mask that covers [B, Lq, Lk] gets the head
        # dim too, so its batch dim keeps lining up with B; lower ranks broadcast as they are.
        q, k, v = A.unsqueeze(q, 1), A.unsqueeze(k, 1), A.unsqueeze(v, 1)
        if mask is not None and mask.ndim == 3:
            mask = A.unsqueeze(mask, 1)
    elif q.ndim != 4:
        raise ValueError(f"q: expected 4-D [B, H, L, D] or 3-D [B, L, D], got shape "
                         f"{tuple(q.shape)}")
    if k.ndim != 4 or v.ndim != 4:
        bad, x = ("k", k) if k.ndim != 4 else ("v", v)
        raise ValueError(f"{bad}: must be 4-D like q, got shape {tuple(x.shape)}")

    params = _params(mask, causal, window, align, scale, softcap, kv_lens, q_lens, num_threads,
                     bf16_probabilities, diagonal_offset)
    if _autograd.wants_grad(kind, q, k, v, mask):
        out, lse, weights = _autograd.attention(q, k, v, mask, params, return_weights)
    else:
        batch, heads, len_q, _ = q.shape
        out = A.empty(kind, (batch, heads, len_q, v.shape[3]), q.dtype)
        lse = A.empty(kind, (batch, heads, len_q), A.float32(kind)) if return_lse else None
        weights = (A.empty(kind, (batch, heads, len_q, k.shape[2]), q.dtype) if return_weights
                   else None)
        _xattn.attention(A.spec(q, "q"), A.spec(k, "k"), A.spec(v, "v"), params,
                         A.spec(out, "out"), A.optional_spec(lse, "lse"),
                         A.optional_spec(weights, "weights"))
    if one_head:
        out, lse, weights = A.squeeze(out, 1), A.squeeze(lse, 1), A.squeeze(weights, 1)
    return _result(out, lse, weights, return_lse, return_weights)


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, *, mask=None, causal=False, window=None,
                     align="top_left", scale=None, softcap=0.0, return_lse=False,
                     return_weights=False, num_threads=0, bf16_probabilities=False):
    """Attention over packed sequences of different lengths (FlashAttention's varlen layout).

    Args:
      q: [total_q, Hq, D]; k: [total_k, Hkv, D]; v: [total_k, Hkv, Dv] (kinds and dtypes as in
        attention()). Sequence b owns rows cu_seqlens_q[b] .. cu_seqlens_q[b+1] of q and rows
        cu_seqlens_k[b] .. cu_seqlens_k[b+1] of k and v; it attends only to its own keys.
      cu_seqlens_q, cu_seqlens_k: B+1 non-decreasing offsets starting at 0 (sequences of ints or
        1-D integer arrays / tensors).
      mask: optional, broadcasting to [B, Hq, max_q, max_k], indexed by positions within each
        sequence.
      causal, window, align, scale, softcap, num_threads, bf16_probabilities, and gradients: as in
        attention(); "bottom_right"
        aligns each sequence's last query with its last key.
      return_lse: also return lse, float32 [Hq, total_q].
      return_weights: also return weights [Hq, total_q, max_k] (columns past a sequence's own
        length are 0).

    Returns:
      out [total_q, Hq, Dv], or (out, lse?, weights?) as in attention().
    """
    kind = _check_qkv(q, k, v)
    _check_mask(kind, mask)
    A.check_bool(return_lse, "return_lse"), A.check_bool(return_weights, "return_weights")
    for x, arg in ((q, "q"), (k, "k"), (v, "v")):
        if x.ndim != 3:
            raise ValueError(f"{arg}: expected 3-D [total, H, D], got shape {tuple(x.shape)}")
    for cu, arg in ((cu_seqlens_q, "cu_seqlens_q"), (cu_seqlens_k, "cu_seqlens_k")):
        if cu is None:  # (int_list reads None as "no lengths")
            raise TypeError(f"{arg}: expected a sequence of ints, got NoneType")
    cu_q = A.int_list(cu_seqlens_q, "cu_seqlens_q")
    cu_k = A.int_list(cu_seqlens_k, "cu_seqlens_k")
    params = _params(mask, causal, window, align, scale, softcap, None, None, num_threads,
                     bf16_probabilities)
    if _autograd.wants_grad(kind, q, k, v, mask):
        out, lse, weights = _autograd.attention(q, k, v, mask, params, return_weights,
                                                cu_seqlens=(cu_q, cu_k))
        return _result(out, lse, weights, return_lse, return_weights)
    # Only to size the weights; the library checks the offsets themselves.
    max_k = max([b - a for a, b in zip(cu_k, cu_k[1:])] + [0])
    total_q, heads, _ = q.shape
    out = A.empty(kind, (total_q, heads, v.shape[2]), q.dtype)
    lse = A.empty(kind, (heads, total_q), A.float32(kind)) if return_lse else None
    weights = A.empty(kind, (heads, total_q, max_k), q.dtype) if return_weights else None
    _xattn.attention_varlen(A.spec(q, "q"), A.spec(k, "k"), A.spec(v, "v"), cu_q, cu_k, params,
                            A.spec(out, "out"), A.optional_spec(lse, "lse"),
                            A.optional_spec(weights, "weights"))
    return _result(out, lse, weights, return_lse, return_weights)


def merge(out_a, lse_a, out_b, lse_b):
    """Combines two attention results over disjoint key sets into the result over their union.

    out = (e^(lse_a - m) * out_a + e^(lse_b - m) * out_b) / (e^(lse_a - m) + e^(lse_b - m)),
    lse = m + log(e^(lse_a - m) + e^(lse_b - m)), m = max(lse_a, lse_b). A side with lse = -inf
    (no visible key) contributes nothing.

    Args:
      out_a, out_b: [..., L, Dv] (rank 1-4), one kind and dtype (float32/float16/bfloat16).
      lse_a, lse_b: float32, the same shape without Dv.

    Returns:
      (out, lse): new arrays of the inputs' kind; out in the dtype of out_a, lse float32.
    """
    kind = A.kind_of(out_a, "out_a")
    dtype = A.check_dtype(out_a, "out_a", A.FLOAT_DTYPES)
    for x, arg in ((lse_a, "lse_a"), (out_b, "out_b"), (lse_b, "lse_b")):
        _check_kind(kind, x, arg, "out_a")
    if A.check_dtype(out_b, "out_b", A.FLOAT_DTYPES) != dtype:
        raise TypeError(f"out_b: dtype {out_b.dtype} differs from out_a's dtype {out_a.dtype}")
    A.check_dtype(lse_a, "lse_a", ("float32",))
    A.check_dtype(lse_b, "lse_b", ("float32",))
    out = A.empty(kind, tuple(out_a.shape), out_a.dtype)
    lse = A.empty(kind, tuple(lse_a.shape), A.float32(kind))
    _xattn.merge(A.spec(out_a, "out_a"), A.spec(lse_a, "lse_a"), A.spec(out_b, "out_b"),
                 A.spec(lse_b, "lse_b"), A.spec(out, "out"), A.spec(lse, "lse"))
    return out, lse
