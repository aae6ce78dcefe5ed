"""Autograd for torch tensors: xattn.attention records one node whose backward calls the C++
attention_backward, which recomputes the probabilities from the saved log-sum-exp (memory stays
linear in the sequence lengths). Gradients flow through `out` into q, k, v and a float mask (a
learned bias); lse and weights are returned as non-differentiable. torch is imported only when
a tensor asks for gradients.
"""

from . import _arrays as A
from . import _xattn

_FUNCTION = None


def wants_grad(kind, q, k, v, mask):
    """Whether this call must record an autograd node."""
    if kind != A.TORCH:
        return False
    torch = A._torch()
    if not torch.is_grad_enabled():
        return False
    return any(x is not None and x.requires_grad for x in (q, k, v, mask))


def attention(q, k, v, mask, params, want_weights, cu_seqlens=None):
    """(out, lse, weights or None) with an autograd node on out. q, k, v are 4-D torch tensors,
    or with cu_seqlens = (cu_q, cu_k) packed 3-D ones (attention_varlen's layout)."""
    layout = _Dense() if cu_seqlens is None else _Varlen(*cu_seqlens)
    out, lse, weights = _function().apply(q, k, v, mask, params, want_weights, layout)
    return out, lse, (weights if want_weights else None)


class _Dense:
    """attention()'s layout: q [B, Hq, Lq, D], out [B, Hq, Lq, Dv], lse [B, Hq, Lq]."""

    def shapes(self, q, k, v):
        batch, heads, len_q, _ = q.shape
        return (batch, heads, len_q, v.shape[3]), (batch, heads, len_q), (batch, heads, len_q,
                                                                           k.shape[2])

    def forward(self, q, k, v, params, out, lse, weights):
        _xattn.attention(q, k, v, params, out, lse, weights)

    def backward(self, q, k, v, out, lse, dout, params, dq, dk, dv, dmask):
        _xattn.attention_backward(q, k, v, out, lse, dout, params, dq, dk, dv, dmask)


class _Varlen:
    """attention_varlen()'s layout: q [Tq, Hq, D], out [Tq, Hq, Dv], lse [Hq, Tq]."""

    def __init__(self, cu_q, cu_k):
        self.cu_q, self.cu_k = cu_q, cu_k

    def shapes(self, q, k, v):
        total_q, heads, _ = q.shape
        max_k = max([b - a for a, b in zip(self.cu_k, self.cu_k[1:])] + [0])
        return (total_q, heads, v.shape[2]), (heads, total_q), (heads, total_q, max_k)

    def forward(self, q, k, v, params, out, lse, weights):
        _xattn.attention_varlen(q, k, v, self.cu_q, self.cu_k, params, out, lse, weights)

    def backward(self, q, k, v, out, lse, dout, params, dq, dk, dv, dmask):
        _xattn.attention_varlen_backward(q, k, v, self.cu_q, self.cu_k, out, lse, dout, params,
                                         dq, dk, dv, dmask)


def _function():
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _make_function(A._torch())
    return _FUNCTION


def _make_function(torch):
    class AttentionFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, mask, params, want_weights, layout):
            out_shape, lse_shape, weights_shape = layout.shapes(q, k, v)
            if want_weights:
                A.check_fits(A.TORCH, weights_shape, q.dtype)
            out = torch.empty(out_shape, dtype=q.dtype)
            lse = torch.empty(lse_shape, dtype=torch.float32)
            weights = torch.empty(weights_shape if want_weights else 0, dtype=q.dtype)
            layout.forward(A.spec(q, "q"), A.spec(k, "k"), A.spec(v, "v"), params,
                           A.spec(out, "out"), A.spec(lse, "lse"),
                           A.spec(weights, "weights") if want_weights else None)
            ctx.save_for_backward(q, k, v, out, lse)
            ctx.params = params  # points into mask: keep it alive too
            ctx.mask, ctx.layout = mask, layout
            ctx.mark_non_differentiable(lse, weights)
            return out, lse, weights

        @staticmethod
        def backward(ctx, dout, _dlse, _dweights):
            q, k, v, out, lse = ctx.saved_tensors
            dq, dk, dv = (torch.empty(x.shape, dtype=x.dtype) for x in (q, k, v))
            mask = ctx.mask
            dmask = (torch.empty(mask.shape, dtype=mask.dtype)
                     if mask is not None and ctx.needs_input_grad[3] else None)
            ctx.layout.backward(A.spec(q, "q"), A.spec(k, "k"), A.spec(v, "v"),
                                A.spec(out, "out"), A.spec(lse, "lse"), A.spec(dout, "dout"),
                                ctx.params, A.spec(dq, "dq"), A.spec(dk, "dk"), A.spec(dv, "dv"),
                                A.optional_spec(dmask, "dmask"))
            return dq, dk, dv, dmask, None, None, None

    return AttentionFunction
