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


def attention(q, k, v, mask, params, want_weights):
    """(out, lse, weights or None) with an autograd node on out. q, k, v are 4-D torch tensors."""
    out, lse, weights = _function().apply(q, k, v, mask, params, want_weights)
    return out, lse, (weights if want_weights else None)


def _function():
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _make_function(A._torch())
    return _FUNCTION


def _make_function(torch):
    class AttentionFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, mask, params, want_weights):
            batch, heads, len_q, _ = q.shape
            out = torch.empty((batch, heads, len_q, v.shape[3]), dtype=q.dtype)
            lse = torch.empty((batch, heads, len_q), dtype=torch.float32)
            weights = (torch.empty((batch, heads, len_q, k.shape[2]), dtype=q.dtype)
                       if want_weights else torch.empty(0, dtype=q.dtype))
            _xattn.attention(A.spec(q, "q"), A.spec(k, "k"), A.spec(v, "v"), params,
                             A.spec(out, "out"), A.spec(lse, "lse"),
                             A.spec(weights, "weights") if want_weights else None)
            ctx.save_for_backward(q, k, v, out, lse)
            ctx.params = params  # points into mask: keep it alive too
            ctx.mask = mask
            ctx.mark_non_differentiable(lse, weights)
            return out, lse, weights

        @staticmethod
        def backward(ctx, dout, _dlse, _dweights):
            q, k, v, out, lse = ctx.saved_tensors
            dq, dk, dv = (torch.empty(x.shape, dtype=x.dtype) for x in (q, k, v))
            mask = ctx.mask
            dmask = (torch.empty(mask.shape, dtype=mask.dtype)
                     if mask is not None and ctx.needs_input_grad[3] else None)
            _xattn.attention_backward(A.spec(q, "q"), A.spec(k, "k"), A.spec(v, "v"),
                                      A.spec(out, "out"), A.spec(lse, "lse"),
                                      A.spec(dout, "dout"), ctx.params, A.spec(dq, "dq"),
                                      A.spec(dk, "dk"), A.spec(dv, "dv"),
                                      A.optional_spec(dmask, "dmask"))
            return dq, dk, dv, dmask, None, None

    return AttentionFunction
