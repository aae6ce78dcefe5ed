"""xattn.torch_dist.ring_attention: self-attention with Q, K and V sharded by sequence. The K/V
blocks travel around the ring (rank r sends to r + 1, receives from r - 1) for P steps; each rank
merges its queries' partials over the blocks by log-sum-exp, in step order. Backward: the K/V
blocks travel again, and each block's dk/dv accumulates as it visits the ranks, in ring order
from its owner, and comes home after the last hop. Every block call is a top-left call whose
diagonal_offset places the block's queries and keys at their global positions, so causal masks
and windows see the whole sequence; blocks that no query sees are skipped.
"""

from . import _arrays as A
from . import _xattn
from ._attention import _check_qkv, _params
from ._torch_dist_agree import Error, Report, agree, group_of

ENTRY = "ring_attention"
LAYOUTS = ("contiguous", "zigzag")
_FUNCTION = None


def ring_attention(q, k, v, *, group=None, causal=False, window=None, scale=None, softcap=0.0,
                   layout="contiguous", num_threads=0):
    """Self-attention over a sequence sharded across the ranks of `group`, exact, with autograd.

    Args:
      q, k, v: [B, Hq, n, D], [B, Hkv, n, D], [B, Hkv, n, Dv] CPU tensors (float32, float16,
        bfloat16): this rank's rows of the sequence (the same n for q, k and v).
        layout "contiguous": rank r holds rows o_r .. o_r + n_r - 1, o_r = n_0 + ... + n_{r-1}
        (n_r may differ between ranks). "zigzag": the sequence is cut into 2P equal chunks and
        rank r holds chunks r and 2P - 1 - r, concatenated (n = 2·L/(2P) on every rank), which
        balances causal work across the ranks.
      group: a torch.distributed process group (default: the world), gloo for CPU tensors.
      causal, window, scale, softcap: as in xattn.attention over the whole sequence (query i
        and key j at their global positions; for self-attention top-left = bottom-right).
      Everything but num_threads must be the same on every rank.

    Gradients: when q, k or v requires grad (on every rank alike), out gets an autograd node;
    each rank's dout is the gradient of its own rows, and every rank must run the backward.

    Returns:
      out [B, Hq, n, Dv] in q's dtype: this rank's rows of the whole result.

    Raises:
      xattn.Error on EVERY rank when any rank's arguments are invalid or the ranks disagree,
      naming the argument and the rank (the rank at fault raises its own exception's class with
      the same message); after the group's timeout when a rank never calls.
    """
    import torch
    import torch.distributed as dist
    group, rank, size = group_of(dist, group)
    mine, own_exc, prepared = Report(), None, None
    try:
        prepared = _check_locally(torch, q, k, v, causal, window, scale, softcap, layout,
                                  num_threads)
        mine.fields, mine.local = prepared["fields"], q.shape[2]
    except (TypeError, ValueError) as e:
        mine.fail(e)
        own_exc = e
    reports = agree(dist, group, ENTRY, mine, own_exc)
    lengths = [rep.local for rep in reports]
    if layout == "zigzag" and any(n != lengths[0] for n in lengths):
        given = ", ".join(f"{n} on rank {r}" for r, n in enumerate(lengths))
        raise Error(f"{ENTRY}: q: the zigzag layout needs the same local length (two equal "
                    f"chunks) on every rank, got {given}")
    ring = _Ring(torch, dist, group, rank, size, _segments(layout, lengths), prepared)
    if prepared["grad"]:
        return _function(torch).apply(q, k, v, ring)
    out32, _ = ring.forward(q, k, v)
    return out32.to(q.dtype)


def _check_locally(torch, q, k, v, causal, window, scale, softcap, layout, num_threads):
    kind = _check_qkv(q, k, v)
    if kind != A.TORCH:
        raise TypeError("q: xattn.torch_dist takes torch tensors (numpy arrays: xattn.dist)")
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"layout: expected 'contiguous' or 'zigzag', got {layout!r}")
    for x, arg in ((q, "q"), (k, "k"), (v, "v")):
        if x.ndim != 4:
            raise ValueError(f"{arg}: expected 4-D [B, H, n, D], got shape {tuple(x.shape)}")
    if k.shape[2] != q.shape[2]:
        raise ValueError(f"k: dim 2 (n) must equal q's n = {q.shape[2]} (self-attention: q, k "
                         f"and v hold the same rows), got {k.shape[2]}")
    if layout == "zigzag" and q.shape[2] % 2:
        raise ValueError(f"q: the zigzag layout holds two equal chunks per rank, so the local "
                         f"length must be even, got {q.shape[2]}")
    params = _params(None, causal, window, "top_left", scale, softcap, None, None, num_threads,
                     False, 0)
    out = torch.empty((q.shape[0], q.shape[1], q.shape[2], v.shape[3]), dtype=torch.float32)
    _xattn.validate_attention(A.spec(q, "q"), A.spec(k, "k"), A.spec(v, "v"), params,
                              A.spec(out, "out"), None, None)
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    left, right = params.window_left, params.window_right
    fields = [("q", "B (batch)", q.shape[0]), ("q", "Hq (query heads)", q.shape[1]),
              ("q", "D (head dim)", q.shape[3]), ("k", "Hkv (key/value heads)", k.shape[1]),
              ("v", "Dv (value dim)", v.shape[3]), ("q", "dtype", str(q.dtype)),
              ("q, k, v", "whether gradients are recorded", grad),
              ("scale", "value", params.scale), ("softcap", "value", params.softcap),
              ("causal", "value", params.causal), ("window", "value", (left, right)),
              ("layout", "value", layout)]
    return {"fields": fields, "grad": grad, "causal": params.causal, "window": window,
            "bounds": _bounds(params.causal, left, right), "scale": scale, "softcap": softcap,
            "num_threads": num_threads}


def _bounds(causal, left, right):
    """(left, right) reach of a query over keys, None = unbounded: key j is visible from query i
    only if i - left <= j <= i + right."""
    left = None if left < 0 else left
    right = None if right < 0 else right
    if causal:
        right = 0 if right is None else min(right, 0)
    return left, right


def _segments(layout, lengths):
    """Per rank, its rows as (global start, local start, count) runs."""
    if layout == "contiguous":
        starts = [sum(lengths[:r]) for r in range(len(lengths))]
        return [[(starts[r], 0, n)] for r, n in enumerate(lengths)]
    size, chunk = len(lengths), lengths[0] // 2
    return [[(r * chunk, 0, chunk), ((2 * size - 1 - r) * chunk, chunk, chunk)]
            for r in range(size)]


class _Ring:
    """One call's ring: who holds which rows, and the forward and backward passes."""

    def __init__(self, torch, dist, group, rank, size, segments, prepared):
        self.torch, self.dist, self.group = torch, dist, group
        self.rank, self.size, self.segments, self.p = rank, size, segments, prepared
        peer = dist.get_global_rank if hasattr(dist, "get_global_rank") else \
            dist.distributed_c10d._get_global_rank
        self.next = (rank + 1) % size if group is None else peer(group, (rank + 1) % size)
        self.prev = (rank - 1) % size if group is None else peer(group, (rank - 1) % size)

    def _pairs(self, owner):
        """The (query run, key run) pairs of this rank's rows and `owner`'s block that some query
        sees, with the diagonal offset that places them: a top-left call over the pair."""
        left, right = self.p["bounds"]
        for gq, lq, nq in self.segments[self.rank]:
            for gk, lk, nk in self.segments[owner]:
                if nq == 0 or nk == 0:
                    continue
                # Keys seen by some query of the run: [gq - left, gq + nq - 1 + right].
                if right is not None and gk > gq + nq - 1 + right:
                    continue
                if left is not None and gk + nk - 1 < gq - left:
                    continue
                yield slice(lq, lq + nq), slice(lk, lk + nk), gq - gk

    def _params(self, offset):
        p = self.p
        return _params(None, p["causal"], p["window"], "top_left", p["scale"], p["softcap"],
                       None, None, p["num_threads"], False, offset)

    def _shift(self, tensors, step, tag):
        """Posts sending `tensors` (the block held at `step`) to the next rank and receiving the
        previous rank's into new buffers; returns (requests, buffers). Empty blocks (an empty
        shard) are not sent: both ends know the lengths. Each request keeps its tensor alive."""
        incoming = (self.rank - step - 1) % self.size
        n_in = sum(n for _, _, n in self.segments[incoming])
        requests, buffers = [], []
        for i, x in enumerate(tensors):
            t = tag + 8 * step + i
            if x.shape[2]:
                x = x.contiguous()
                requests.append((self.dist.isend(x, self.next, self.group, t), x))
            shape = list(x.shape)
            shape[2] = n_in
            buf = self.torch.empty(shape, dtype=x.dtype)
            if n_in:
                requests.append((self.dist.irecv(buf, self.prev, self.group, t), buf))
            buffers.append(buf)
        return requests, buffers

    def forward(self, q, k, v):
        """(out, lse) of this rank's rows over the whole sequence, f32."""
        torch = self.torch
        B, H, n, Dv = q.shape[0], q.shape[1], q.shape[2], v.shape[3]
        out = torch.zeros((B, H, n, Dv), dtype=torch.float32)
        lse = torch.full((B, H, n), float("-inf"), dtype=torch.float32)
        block = (k, v)
        for step in range(self.size):
            owner = (self.rank - step) % self.size
            # The next block's transfer runs while this one is computed.
            pending = self._shift(block, step, 0) if step < self.size - 1 else ([], None)
            for qs, ks, offset in self._pairs(owner):
                part = torch.empty((B, H, qs.stop - qs.start, Dv), dtype=torch.float32)
                part_lse = torch.empty(part.shape[:3], dtype=torch.float32)
                _xattn.attention(A.spec(q[:, :, qs], "q"), A.spec(block[0][:, :, ks], "k"),
                                 A.spec(block[1][:, :, ks], "v"), self._params(offset),
                                 A.spec(part, "out"), A.spec(part_lse, "lse"), None)
                o, s = out[:, :, qs], lse[:, :, qs]
                _xattn.merge(A.spec(o, "out_a"), A.spec(s, "lse_a"), A.spec(part, "out_b"),
                             A.spec(part_lse, "lse_b"), A.spec(o, "out"), A.spec(s, "lse"))
            _wait(pending[0])
            block = pending[1]
        return out, lse

    def backward(self, q, k, v, out, lse, dout):
        """(dq, dk, dv) of this rank's rows, f32."""
        torch = self.torch
        dq = torch.zeros(q.shape, dtype=torch.float32)
        block = (k, v)
        grads = (torch.zeros(k.shape, dtype=torch.float32),
                 torch.zeros(v.shape, dtype=torch.float32))
        for step in range(self.size):
            owner = (self.rank - step) % self.size
            pending = self._shift(block, step, 0) if step < self.size - 1 else ([], None)
            for qs, ks, offset in self._pairs(owner):
                kb, vb = block[0][:, :, ks], block[1][:, :, ks]
                dq_part = torch.empty(q[:, :, qs].shape, dtype=torch.float32)
                dk_part = torch.empty(kb.shape, dtype=torch.float32)
                dv_part = torch.empty(vb.shape, dtype=torch.float32)
                _xattn.attention_backward(
                    A.spec(q[:, :, qs], "q"), A.spec(kb, "k"), A.spec(vb, "v"),
                    A.spec(out[:, :, qs], "out"), A.spec(lse[:, :, qs], "lse"),
                    A.spec(dout[:, :, qs], "dout"), self._params(offset), A.spec(dq_part, "dq"),
                    A.spec(dk_part, "dk"), A.spec(dv_part, "dv"), None)
                dq[:, :, qs] += dq_part
                grads[0][:, :, ks] += dk_part
                grads[1][:, :, ks] += dv_part
            _wait(pending[0])
            if step < self.size - 1:
                block = pending[1]
            # The block's gradients follow it to the next rank; after the last step, that is the
            # rank that owns it.
            if self.size > 1:
                requests, grads = self._shift(grads, step, 4)
                _wait(requests)
        return dq, grads[0], grads[1]


def _wait(requests):
    for request, _tensor in requests:
        request.wait()


def _function(torch):
    global _FUNCTION
    if _FUNCTION is None:
        class RingFunction(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v, ring):
                out32, lse = ring.forward(q, k, v)
                ctx.save_for_backward(q, k, v, out32, lse)
                ctx.ring = ring
                return out32.to(q.dtype, copy=True)

            @staticmethod
            def backward(ctx, dout):
                q, k, v, out32, lse = ctx.saved_tensors
                dq, dk, dv = ctx.ring.backward(q, k, v, out32, lse, dout)
                return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None

        _FUNCTION = RingFunction
    return _FUNCTION
