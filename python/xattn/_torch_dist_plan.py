"""What xattn.torch_dist's entries share about masks, lengths and the diagonal: the local checks
of mask, align, kv_lens, q_lens and diagonal_offset (their values join the collective report),
the check of the agreed lengths against the whole problem, and the plan of top-left calls that
place a run of queries and a run of keys at their global positions.
"""

from collections import namedtuple

from . import _arrays as A
from ._attention import _check_mask, _int, _params
from ._torch_dist_agree import Error

ALIGNS = ("top_left", "bottom_right")

# One top-left call over the batches `batch` (a slice): its diagonal offset and its local
# kv_lens and q_lens (one entry per batch of the call; [] = the run's full length).
Call = namedtuple("Call", "batch offset kv_lens q_lens")


def check_options(torch, kind, mask, align, kv_lens, q_lens, diagonal_offset):
    """The checks that need no other rank. Returns (options, fields): the values the plan uses,
    and the (argument, what, value) triples that must be the same on every rank."""
    _check_mask(kind, mask)
    # The C++ backward gives no dmask for a mask sliced by block; refuse rather than drop it.
    if mask is not None and mask.requires_grad and torch.is_grad_enabled():
        raise ValueError("mask: xattn.torch_dist gives a mask no gradient; pass mask.detach()")
    kv_list, q_list = A.int_list(kv_lens, "kv_lens"), A.int_list(q_lens, "q_lens")
    if not isinstance(align, str) or align not in ALIGNS:
        raise ValueError(f"align: expected 'top_left' or 'bottom_right', got {align!r}")
    offset = _int(diagonal_offset, "diagonal_offset")
    options = {"align": align, "kv_lens": kv_list, "q_lens": q_list, "offset": offset}
    fields = [("align", "value", align), ("diagonal_offset", "value", offset),
              ("kv_lens", "value", kv_list), ("q_lens", "value", q_list)]
    return options, fields


def check_lens(entry, arg, lens, batch, limit, limit_name):
    """Lengths of the whole problem, once known: B entries in [0, limit]. Run on the agreed
    values, so it raises alike on every rank."""
    if lens and len(lens) != batch:
        raise Error(f"{entry}: {arg}: expected {batch} entries (one per batch), got {len(lens)}")
    for b, n in enumerate(lens):
        if not 0 <= n <= limit:
            raise Error(f"{entry}: {arg}[{b}] = {n} is out of range [0, {limit_name} = {limit}]")


def diagonals(p, batch, q_total, k_total):
    """Per batch, the whole problem's diagonal as a top-left offset: row i's diagonal is at key
    i + d_b. Bottom-right moves it by KV_b - Q_b (the valid lengths, else the whole ones)."""
    kv, ql = p["kv_lens"], p["q_lens"]
    if p["align"] != "bottom_right":
        return [p["offset"]] * batch
    return [(kv[b] if kv else k_total) - (ql[b] if ql else q_total) + p["offset"]
            for b in range(batch)]


def block_calls(p, diagonal, gq, nq, gk, nk):
    """The calls for the whole problem's queries gq .. gq + nq - 1 over its keys gk .. gk + nk - 1:
    top-left calls with the diagonal moved by gq - gk and the lengths cut to the runs. One call
    when the offset is the same for every batch, else one per batch."""
    batch = len(diagonal)
    offsets = [d + gq - gk for d in diagonal]
    kv = [min(max(n - gk, 0), nk) for n in p["kv_lens"]]
    ql = [min(max(n - gq, 0), nq) for n in p["q_lens"]]
    if all(o == offsets[0] for o in offsets):
        return [Call(slice(0, batch), offsets[0] if batch else 0, kv, ql)]
    return [Call(slice(b, b + 1), offsets[b], kv[b:b + 1], ql[b:b + 1]) for b in range(batch)]


def slice_mask(mask, batch, rows=slice(None), cols=slice(None)):
    """The part of a broadcasting [B, Hq, rows, cols] mask that a call covers: only its dims of
    size > 1 are cut (right-aligned); size-1 dims broadcast as they are."""
    if mask is None:
        return None
    index = [slice(None)] * mask.ndim
    for dim, part in ((-4, batch), (-2, rows), (-1, cols)):
        if mask.ndim >= -dim and mask.shape[dim] > 1:
            index[dim] = part
    return mask[tuple(index)]


def call_params(p, call, mask):
    """The C++ params of one call; `mask` is already cut to it (and must outlive the call)."""
    return _params(mask, p["causal"], p["window"], "top_left", p["scale"], p["softcap"],
                   call.kv_lens, call.q_lens, p["num_threads"], False, call.offset)
