"""xattn.torch_dist.attention_split_kv: q on every rank, keys split across the ranks in rank
order. Each rank computes its shard's partial (out, lse) in f32 as top-left calls with the whole
problem's diagonal moved to the shard's first key; the partials are all-gathered and merged in
rank order, so every rank holds the same bits. Backward: the C++ backward of each shard with the
GLOBAL out and lse gives that shard's exact dk, dv and its share of dq (the probabilities
e^(s - lse) and the row term rowsum(dout * out) are the whole problem's); the dq shares are
all-gathered and summed in rank order.
"""

from . import _arrays as A
from . import _torch_dist_autograd as autograd
from . import _xattn
from ._attention import _check_qkv, _params
from ._torch_dist_agree import Error, Report, agree, group_of
from ._torch_dist_plan import block_calls, call_params, check_lens, check_options, diagonals, \
    slice_mask

ENTRY = "attention_split_kv"


def attention_split_kv(q, k_shard, v_shard, *, group=None, mask=None, causal=False, window=None,
                       align="top_left", scale=None, softcap=0.0, kv_lens=None, q_lens=None,
                       diagonal_offset=0, return_lse=False, num_threads=0):
    """Attention of q over keys split across the ranks of `group`; every rank gets the result
    over all keys (the same bits on every rank), and gradients through autograd.

    Args:
      q: [B, Hq, Lq, D] CPU tensor (float32, float16, bfloat16), the same on every rank.
      k_shard, v_shard: [B, Hkv, n_r, D] and [B, Hkv, n_r, Dv]: keys o_r .. o_r + n_r - 1 of the
        whole sequence, o_r = n_0 + ... + n_{r-1} (rank order is key order). n_r may differ
        between ranks, and be 0.
      group: a torch.distributed process group (default: the world), gloo for CPU tensors.
      mask: this rank's columns of the whole mask, broadcasting to [B, Hq, Lq, n_r]; it gets no
        gradient.
      causal, window, align, diagonal_offset, scale, softcap: as in xattn.attention, over GLOBAL
        key positions (bottom-right aligns with the whole key length).
      kv_lens: the whole sequence's valid key counts per batch; q_lens as in xattn.attention.
      Everything but mask and num_threads must be the same on every rank.

    Gradients: when q, k_shard or v_shard requires grad (on every rank alike), out gets an
    autograd node. out is replicated, so the loss must be computed alike on every rank (the same
    dout everywhere); then q's gradient is the whole problem's on every rank and k_shard's and
    v_shard's are this shard's. Every rank must run the backward: it all-gathers the dq shares.

    Returns:
      out [B, Hq, Lq, Dv] in q's dtype, or (out, lse) with return_lse (lse float32 [B, Hq, Lq]).

    Raises:
      xattn.Error on EVERY rank when any rank's arguments are invalid or the ranks disagree,
      naming the argument and the rank (the rank at fault raises its own exception's class with
      the same message). A rank that never calls, or calls through another group, makes the
      others raise xattn.Error after the group's timeout.
    """
    torch, dist = _torch_modules()
    group, rank, size = group_of(dist, group)
    mine, own_exc, prepared = Report(), None, None
    try:
        prepared = _check_locally(torch, q, k_shard, v_shard, mask, causal, window, align, scale,
                                  softcap, kv_lens, q_lens, diagonal_offset, return_lse,
                                  num_threads)
        mine.fields, mine.local = prepared["fields"], k_shard.shape[2]
    except (TypeError, ValueError) as e:
        mine.fail(e)
        own_exc = e
    reports = agree(dist, group, ENTRY, mine, own_exc)

    lengths = [rep.local for rep in reports]
    first_key, total_keys = sum(lengths[:rank]), sum(lengths)
    calls = _plan(prepared, q.shape[0], q.shape[2], first_key, k_shard.shape[2], total_keys)
    job = _Job(torch, dist, group, size, prepared, calls, mask)
    out, lse = autograd.run(torch, job, q, k_shard, v_shard, prepared["grad"])
    return (out, lse) if return_lse else out


def _torch_modules():
    import torch
    import torch.distributed as dist
    return torch, dist


def _check_locally(torch, q, k, v, mask, causal, window, align, scale, softcap, kv_lens, q_lens,
                   diagonal_offset, return_lse, num_threads):
    """What needs no other rank: types, shapes against each other, option values (attention()'s
    own checks on the shard, with the global diagonal and lengths left for later)."""
    names = {"k": "k_shard", "v": "v_shard"}
    try:
        kind = _check_qkv(q, k, v)
    except TypeError as e:  # name the shards as the caller knows them
        raise TypeError(_rename(str(e), names)) from None
    if kind != A.TORCH:
        raise TypeError("q: xattn.torch_dist takes torch tensors (numpy arrays: xattn.dist)")
    options, option_fields = check_options(torch, kind, mask, align, kv_lens, q_lens,
                                           diagonal_offset)
    A.check_bool(return_lse, "return_lse")
    for x, arg in ((q, "q"), (k, "k_shard"), (v, "v_shard")):
        if x.ndim != 4:
            raise ValueError(f"{arg}: expected 4-D [B, H, L, D], got shape {tuple(x.shape)}")
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    # q is whole here, so q_lens is checked against it at once.
    local = _params(mask, causal, window, "top_left", scale, softcap, None, options["q_lens"],
                    num_threads, False, 0)
    out = torch.empty((q.shape[0], q.shape[1], q.shape[2], v.shape[3]), dtype=torch.float32)
    try:
        _xattn.validate_attention(A.spec(q, "q"), A.spec(k, "k"), A.spec(v, "v"), local,
                                  A.spec(out, "out"), None, None)
    except ValueError as e:
        raise type(e)(_rename(str(e), names)) from None
    fields = [("q", "B (batch)", q.shape[0]), ("q", "Hq (query heads)", q.shape[1]),
              ("q", "Lq (query rows)", q.shape[2]), ("q", "D (head dim)", q.shape[3]),
              ("k_shard", "Hkv (key/value heads)", k.shape[1]),
              ("v_shard", "Dv (value dim)", v.shape[3]), ("q", "dtype", str(q.dtype)),
              ("q, k_shard, v_shard", "whether gradients are recorded", grad),
              ("scale", "value", local.scale), ("softcap", "value", local.softcap),
              ("causal", "value", local.causal),
              ("window", "value", (local.window_left, local.window_right)),
              ("return_lse", "value", bool(return_lse))] + option_fields
    return {"fields": fields, "grad": grad, "causal": local.causal, "window": window,
            "scale": scale, "softcap": softcap, "num_threads": num_threads, **options}


def _rename(message, names):
    """attention()'s messages call the key and value tensors "k" and "v"; here they are shards."""
    for short, full in names.items():
        if message.startswith(f"{short}: "):
            return full + message[len(short):]
    return message


def _plan(p, batch, q_rows, first_key, keys, total_keys):
    """The shard's calls (Call): row i of batch b sees global key first_key + j where the whole
    problem puts it, as top-left calls with the diagonal moved to the shard's first key. The
    same values on every rank, so a bad kv_lens raises alike everywhere."""
    check_lens(ENTRY, "kv_lens", p["kv_lens"], batch, total_keys,
               "the whole key length (all shards)")
    return block_calls(p, diagonals(p, batch, q_rows, total_keys), 0, q_rows, first_key, keys)


class _Job:
    """One call's plan and group: the forward and backward passes over it."""

    def __init__(self, torch, dist, group, size, p, calls, mask):
        self.torch, self.dist, self.group, self.size = torch, dist, group, size
        self.p, self.calls, self.mask = p, calls, mask

    def _each_call(self):
        for call in self.calls:
            yield call.batch, call_params(self.p, call, slice_mask(self.mask, call.batch))

    def forward(self, q, k, v):
        """(out f32, lse f32) over all shards, merged in rank order."""
        torch = self.torch
        B, H, L, Dv = q.shape[0], q.shape[1], q.shape[2], v.shape[3]
        # Partial = out, lse and a status word (1: computed), one all_gather.
        n_out, n_lse = B * H * L * Dv, B * H * L
        part = torch.empty(n_out + n_lse + 1, dtype=torch.float32)
        out, lse = part[:n_out].view(B, H, L, Dv), part[n_out:-1].view(B, H, L)
        error = self._compute(lambda b, p: _xattn.attention(
            A.spec(q[b], "q"), A.spec(k[b], "k"), A.spec(v[b], "v"), p, A.spec(out[b], "out"),
            A.spec(lse[b], "lse"), None), part)
        parts = self._gather(part, error)
        acc = parts[0]
        acc_out, acc_lse = acc[:n_out].view(B, H, L, Dv), acc[n_out:-1].view(B, H, L)
        for other in parts[1:]:
            _xattn.merge(A.spec(acc_out, "out_a"), A.spec(acc_lse, "lse_a"),
                         A.spec(other[:n_out].view(B, H, L, Dv), "out_b"),
                         A.spec(other[n_out:-1].view(B, H, L), "lse_b"),
                         A.spec(acc_out, "out"), A.spec(acc_lse, "lse"))
        return acc_out, acc_lse

    def backward(self, q, k, v, out, lse, dout):
        """(dq summed over the ranks in rank order, dk, dv of this shard), f32."""
        torch = self.torch
        n_dq = q.numel()
        part = torch.zeros(n_dq + 1, dtype=torch.float32)
        dq = part[:-1].view(q.shape)
        dk = torch.zeros(k.shape, dtype=torch.float32)
        dv = torch.zeros(v.shape, dtype=torch.float32)
        error = self._compute(lambda b, p: _xattn.attention_backward(
            A.spec(q[b], "q"), A.spec(k[b], "k"), A.spec(v[b], "v"), A.spec(out[b], "out"),
            A.spec(lse[b], "lse"), A.spec(dout[b], "dout"), p, A.spec(dq[b], "dq"),
            A.spec(dk[b], "dk"), A.spec(dv[b], "dv"), None), part)
        parts = self._gather(part, error)
        total = parts[0][:-1].clone()
        for other in parts[1:]:
            total += other[:-1]
        return total.view(q.shape), dk, dv

    def _compute(self, run, part):
        """Runs every call; the last element of `part` says whether all went well."""
        try:
            for b, p in self._each_call():
                run(b, p)
            part[-1] = 1.0
            return None
        except Exception as e:  # noqa: BLE001 - reported to every rank, then raised here
            part[-1] = 0.0
            return e

    def _gather(self, part, error):
        parts = [self.torch.empty_like(part) for _ in range(self.size)]
        self.dist.all_gather(parts, part, group=self.group)
        if error is not None:
            raise Error(f"{ENTRY}: {_rename(str(error), {'k': 'k_shard', 'v': 'v_shard'})}") \
                from error
        for r, other in enumerate(parts):
            if other[-1].item() != 1.0:
                raise Error(f"{ENTRY}: rank {r} failed to compute its partial result "
                            "(its own error says why)")
        return parts

