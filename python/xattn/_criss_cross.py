"""criss_cross_attention: CCNet's attention over each pixel's row and column, for numpy arrays and
torch tensors, with autograd (the C++ criss_cross_attention_backward) for torch."""

from . import _arrays as A
from . import _xattn
from ._attention import _check_qkv, _int, _real

_FUNCTION = None


def criss_cross_attention(q, k, v, *, scale=None, return_lse=False, num_threads=0):
    """Criss-cross attention (CCNet, Huang et al. 2019) over H x W maps, channels last.

    The pixel (i, j) attends to the H + W - 1 pixels of its row i and column j, itself once, with
    one softmax over all of them:
      out[b, i, j] = sum over (i', j') in row(i) | col(j) of
                     softmax(scale * q[b, i, j] . k[b, i', j']) * v[b, i', j'].
    It runs as a row problem and a column problem of xattn's kernel on strided views of the same
    arrays, merged exactly by log-sum-exp: no (H*W) x (H*W) mask or score array ever exists.

    Args:
      q, k: [B, H, W, D]; v: [B, H, W, Dv]. numpy arrays (float32, float16) or CPU torch tensors
        (float32, float16, bfloat16), one kind and dtype, any strides (a [B, C, H, W] map
        permuted to channels last is read in place, but contiguous channels read fastest).
      scale: multiplies q . k; default 1 / sqrt(D). CCNet's scores are unscaled: scale=1.
      return_lse: also return the log-sum-exp of each pixel's H + W - 1 scores, float32 [B, H, W].
      num_threads: 0 = the library's default.
      Gradients: torch tensors with requires_grad get an autograd node into q, k and v.

    Returns:
      out [B, H, W, Dv] of the inputs' kind and dtype, or (out, lse).
    """
    kind = _check_qkv(q, k, v)
    A.check_bool(return_lse, "return_lse")
    for x, arg in ((q, "q"), (k, "k"), (v, "v")):
        if x.ndim != 4:
            raise ValueError(f"{arg}: expected 4-D [B, H, W, channels], got shape "
                             f"{tuple(x.shape)}")
    options = (None if scale is None else _real(scale, "scale"),
               _int(num_threads, "num_threads", bits=32))
    if _wants_grad(kind, q, k, v):
        out, lse = _function().apply(q, k, v, options)
    else:
        out, lse = _forward(kind, q, k, v, options)
    return (out, lse) if return_lse else out


def _forward(kind, q, k, v, options):
    batch, height, width, _ = q.shape
    out = A.empty(kind, (batch, height, width, v.shape[3]), q.dtype)
    lse = A.empty(kind, (batch, height, width), A.float32(kind))
    _xattn.criss_cross_attention(A.spec(q, "q"), A.spec(k, "k"), A.spec(v, "v"), *options,
                                 A.spec(out, "out"), A.spec(lse, "lse"))
    return out, lse


def _wants_grad(kind, q, k, v):
    if kind != A.TORCH:
        return False
    return A._torch().is_grad_enabled() and any(x.requires_grad for x in (q, k, v))


def _function():
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _make_function(A._torch())
    return _FUNCTION


def _make_function(torch):
    class CrissCrossFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, options):
            out, lse = _forward(A.TORCH, q, k, v, options)
            ctx.save_for_backward(q, k, v, out, lse)
            ctx.options = options
            ctx.mark_non_differentiable(lse)
            return out, lse

        @staticmethod
        def backward(ctx, dout, _dlse):
            q, k, v, out, lse = ctx.saved_tensors
            dq, dk, dv = (torch.empty(x.shape, dtype=x.dtype) for x in (q, k, v))
            _xattn.criss_cross_attention_backward(
                A.spec(q, "q"), A.spec(k, "k"), A.spec(v, "v"), A.spec(out, "out"),
                A.spec(lse, "lse"), A.spec(dout, "dout"), *ctx.options, A.spec(dq, "dq"),
                A.spec(dk, "dk"), A.spec(dv, "dv"))
            return dq, dk, dv, None

    return CrissCrossFunction
