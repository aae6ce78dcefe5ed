"""xattn.torch_dist.ring_attention: self-attention with Q, K and V sharded by sequence. The K/V
blocks travel around the ring (rank r sends to r + 1, receives from r - 1) for P steps; each rank
merges its queries' partials over the blocks by log-sum-exp, in step order. Backward: the K/V
blocks travel again, and each block's dk/dv accumulates as it visits the ranks, in ring order
from its owner, and comes home after the last hop. Every block call is a top-left call whose
diagonal_offset places the block's queries and keys at their global positions (one call per
batch where bottom-right lengths move the diagonal differently per batch), with kv_lens, q_lens
and the mask cut to the block, so causality, windows, lengths and masks apply over the whole
sequence; calls in which no query sees a key are skipped.
"""

from . import _arrays as A
from . import _torch_dist_autograd as autograd
from . import _xattn
from ._attention import _check_qkv, _params
from ._torch_dist_agree import Error, Report, agree, group_of
from ._torch_dist_plan import block_calls, call_params, check_lens, check_options, diagonals, \
    slice_mask

ENTRY = "ring_attention"
LAYOUTS = ("contiguous", "zigzag")


def ring_attention(q, k, v, *, group=None, mask=None, causal=False, window=None,
                   align="top_left", scale=None, softcap=0.0, kv_lens=None, q_lens=None,
                   diagonal_offset=0, layout="contiguous", num_threads=0):
    """Self-attention over a sequence sharded across the ranks of `group`, exact, with autograd.

    Args:
      q, k, v: [B, Hq, n, D], [B, Hkv, n, D], [B, Hkv, n, Dv] CPU tensors (float32, float16,
        bfloat16): this rank's rows of the sequence (the same n for q, k and v).
        layout "contiguous": rank r holds rows o_r .. o_r + n_r - 1, o_r = n_0 + ... + n_{r-1}
        (n_r may differ between ranks). "zigzag": the sequence is cut into 2P equal chunks and
        rank r holds chunks r and 2P - 1 - r, concatenated (n = 2·L/(2P) on every rank), which
        balances causal work across the ranks.
      group: a torch.distributed process group (default: the world), gloo for CPU tensors.
      mask: this rank's rows of the whole [B, Hq, L, L] mask (L = the whole sequence's length):
        broadcasting (right-aligned, size-1 dims) to [B, Hq, n, L], rows in this rank's local
        order (zigzag: chunk r's rows, then chunk 2P-1-r's), columns all L keys in global order.
        Bool (True = may attend) or float (added to the score). It gets no gradient (pass
        mask.detach() when it requires grad).
      causal, window, align, diagonal_offset, scale, softcap: as in xattn.attention over the
        whole sequence (query i and key j at their global positions; without lengths top-left
        = bottom-right for self-attention).
      kv_lens, q_lens: the WHOLE sequence's valid lengths per batch (B entries each, in
        [0, L]): keys j >= kv_lens[b] are invisible, rows i >= q_lens[b] output 0 and get zero
        gradients.
      Everything but mask and num_threads must be the same on every rank.

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
        prepared = _check_locally(torch, q, k, v, mask, causal, window, align, scale, softcap,
                                  kv_lens, q_lens, diagonal_offset, layout, num_threads)
        # The mask's shape joins the report: only the gather tells L, which it must match.
        mask_shape = None if mask is None else list(mask.shape)
        mine.fields, mine.local = prepared["fields"], (q.shape[2], mask_shape)
    except (TypeError, ValueError) as e:
        mine.fail(e)
        own_exc = e
    reports = agree(dist, group, ENTRY, mine, own_exc)
    lengths = [rep.local[0] for rep in reports]
    _check_gathered(prepared, q.shape, lengths, [rep.local[1] for rep in reports], layout)
    diagonal = diagonals(prepared, q.shape[0], sum(lengths), sum(lengths))
    ring = _Ring(torch, dist, group, rank, size, _segments(layout, lengths), prepared, diagonal,
                 mask)
    return autograd.run(torch, ring, q, k, v, prepared["grad"])[0]


def _check_locally(torch, q, k, v, mask, causal, window, align, scale, softcap, kv_lens,
                   q_lens, diagonal_offset, layout, num_threads):
    """What needs no other rank; lengths and the mask's shape wait for the whole length L."""
    kind = _check_qkv(q, k, v)
    if kind != A.TORCH:
        raise TypeError("q: xattn.torch_dist takes torch tensors (numpy arrays: xattn.dist)")
    options, option_fields = check_options(torch, kind, mask, align, kv_lens, q_lens,
                                           diagonal_offset)
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
              ("layout", "value", layout)] + option_fields
    return {"fields": fields, "grad": grad, "causal": params.causal, "window": window,
            "bounds": _bounds(params.causal, left, right), "scale": scale, "softcap": softcap,
            "num_threads": num_threads, **options}


def _check_gathered(p, shape, lengths, mask_shapes, layout):
    """The checks that need every rank's lengths: run on the gathered reports, in the same order
    on every rank, so they raise alike everywhere."""
    if layout == "zigzag" and any(n != lengths[0] for n in lengths):
        given = ", ".join(f"{n} on rank {r}" for r, n in enumerate(lengths))
        raise Error(f"{ENTRY}: q: the zigzag layout needs the same local length (two equal "
                    f"chunks) on every rank, got {given}")
    total = sum(lengths)
    for arg in ("kv_lens", "q_lens"):
        check_lens(ENTRY, arg, p[arg], shape[0], total, "the whole sequence length L")
    for r, (n, mask_shape) in enumerate(zip(lengths, mask_shapes)):
        want = [shape[0], shape[1], n, total]
        if mask_shape is not None and not _broadcasts(mask_shape, want):
            raise Error(f"{ENTRY}: mask: on rank {r}, expected a shape that broadcasts to "
                        f"[B, Hq, n_r, L] = {want} (this rank's rows of the whole mask), got "
                        f"{mask_shape}")


def _broadcasts(shape, target):
    """Whether `shape` broadcasts to `target` as the library's masks do: rank 1 to 4,
    right-aligned, each dim equal or 1."""
    return 1 <= len(shape) <= len(target) and \
        all(s in (t, 1) for s, t in zip(reversed(shape), reversed(target)))


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

    def __init__(self, torch, dist, group, rank, size, segments, prepared, diagonal, mask):
        self.torch, self.dist, self.group = torch, dist, group
        self.rank, self.size, self.segments, self.p = rank, size, segments, prepared
        self.diagonal, self.mask = diagonal, mask  # (the ring keeps the mask alive for backward)
        peer = dist.get_global_rank if hasattr(dist, "get_global_rank") else \
            dist.distributed_c10d._get_global_rank
        self.next = (rank + 1) % size if group is None else peer(group, (rank + 1) % size)
        self.prev = (rank - 1) % size if group is None else peer(group, (rank - 1) % size)

    def _calls(self, owner):
        """The calls over this rank's rows and `owner`'s block in which some query sees a key:
        (local query rows, the block's local key rows, their global columns, Call)."""
        for gq, lq, nq in self.segments[self.rank]:
            for gk, lk, nk in self.segments[owner]:
                for call in block_calls(self.p, self.diagonal, gq, nq, gk, nk):
                    if self._sees_something(call, nq, nk):
                        yield slice(lq, lq + nq), slice(lk, lk + nk), slice(gk, gk + nk), call

    def _sees_something(self, call, nq, nk):
        """Whether, by lengths, causal and window (masks aside), some row of some batch of the
        call sees one of its keys."""
        count = call.batch.stop - call.batch.start
        rows = call.q_lens or [nq] * count
        keys = call.kv_lens or [nk] * count
        return any(self._reaches(call.offset, m, n) for m, n in zip(rows, keys))

    def _reaches(self, offset, nq, nk):
        """Whether some of rows 0 .. nq - 1 sees one of keys 0 .. nk - 1 in a top-left call with
        this diagonal offset: row i sees [i + offset - left, i + offset + right]."""
        left, right = self.p["bounds"]
        if nq == 0 or nk == 0:
            return False
        if right is not None and nq - 1 + offset + right < 0:
            return False
        return left is None or offset - left <= nk - 1

    def _params(self, call, rows, cols):
        return call_params(self.p, call, slice_mask(self.mask, call.batch, rows, cols))

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
            for qs, ks, cols, call in self._calls(owner):
                bs = call.batch
                part = torch.empty((bs.stop - bs.start, H, qs.stop - qs.start, Dv),
                                   dtype=torch.float32)
                part_lse = torch.empty(part.shape[:3], dtype=torch.float32)
                _xattn.attention(A.spec(q[bs, :, qs], "q"), A.spec(block[0][bs, :, ks], "k"),
                                 A.spec(block[1][bs, :, ks], "v"), self._params(call, qs, cols),
                                 A.spec(part, "out"), A.spec(part_lse, "lse"), None)
                o, s = out[bs, :, qs], lse[bs, :, qs]
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
            for qs, ks, cols, call in self._calls(owner):
                bs = call.batch
                qb, kb, vb = q[bs, :, qs], block[0][bs, :, ks], block[1][bs, :, ks]
                dq_part = torch.empty(qb.shape, dtype=torch.float32)
                dk_part = torch.empty(kb.shape, dtype=torch.float32)
                dv_part = torch.empty(vb.shape, dtype=torch.float32)
                _xattn.attention_backward(
                    A.spec(qb, "q"), A.spec(kb, "k"), A.spec(vb, "v"),
                    A.spec(out[bs, :, qs], "out"), A.spec(lse[bs, :, qs], "lse"),
                    A.spec(dout[bs, :, qs], "dout"), self._params(call, qs, cols),
                    A.spec(dq_part, "dq"), A.spec(dk_part, "dk"), A.spec(dv_part, "dv"), None)
                dq[bs, :, qs] += dq_part
                grads[0][bs, :, ks] += dk_part
                grads[1][bs, :, ks] += dv_part
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

