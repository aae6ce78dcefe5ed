"""The autograd node of xattn.torch_dist's entries. A job (split-KV's or the ring's) computes
(out, lse) in f32 forward and (dq, dk, dv) in f32 backward; the backward is collective, so every
rank must run it."""

_FUNCTION = None


def run(torch, job, q, k, v, record):
    """(out in q's dtype, lse in f32) of job.forward, with an autograd node when `record` (the
    ranks agreed that gradients are recorded for q, k or v); lse gets no gradient."""
    if not record:
        out32, lse = job.forward(q, k, v)
        return out32.to(q.dtype), lse
    return _function(torch).apply(q, k, v, job)


def _function(torch):
    global _FUNCTION
    if _FUNCTION is None:
        class DistributedAttention(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v, job):
                out32, lse = job.forward(q, k, v)
                ctx.save_for_backward(q, k, v, out32, lse)
                ctx.job = job  # its params may point into a mask: the job keeps it alive
                ctx.mark_non_differentiable(lse)
                return out32.to(q.dtype, copy=True), lse  # (not an alias of the saved f32 out)

            @staticmethod
            def backward(ctx, dout, _dlse):
                q, k, v, out32, lse = ctx.saved_tensors
                dq, dk, dv = ctx.job.backward(q, k, v, out32, lse, dout)
                return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None

        _FUNCTION = DistributedAttention
    return _FUNCTION
