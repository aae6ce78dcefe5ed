"""The argument check every xattn.torch_dist call makes first: ONE all_gather_object of a small
report per rank (its local verdict, the values that must match, its own lengths). Every rank
makes it, even a rank whose own checks failed, so a bad argument anywhere raises on every rank
instead of leaving the others waiting in a later collective.
"""

from . import _xattn

Error = _xattn.Error


class Report:
    """One rank's part of the check. `fields` are (argument, what, value) triples that must be
    equal on every rank; `local` is what the other ranks need to know of this one (its lengths)."""

    def __init__(self):
        self.error = None  # (exception class name, message) when this rank's own checks failed
        self.fields = []
        self.local = None

    def fail(self, exc):
        self.error = (type(exc).__name__, str(exc))


def group_of(dist, group):
    """(group, rank in it, its size); raises at once on this rank when the group cannot be used:
    no other rank can be told, so this cannot join a collective."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("xattn.torch_dist: torch.distributed is not initialized "
                           "(call torch.distributed.init_process_group first)")
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group: expected a torch.distributed ProcessGroup or None, got "
                        f"{type(group).__name__}")
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("group: this process is not a member of the group it passed")
    return group, rank, dist.get_world_size(group)


def agree(dist, group, entry, mine, own_exc=None):
    """Every rank's Report, once all of them are valid and agree; else raises the same message on
    every rank: xattn.Error, or on a rank that failed its own checks, its own exception's class.
    A rank that never joins (or joins through another group) shows up as the group's timeout."""
    size = dist.get_world_size(group)
    reports = [None] * size
    try:
        dist.all_gather_object(reports, mine, group=group)
    except RuntimeError as e:
        raise Error(f"{entry}: the ranks' argument check did not complete: a rank of the group "
                    f"did not call {entry} in time (the group's timeout), or the ranks passed "
                    f"different groups ({e})") from e
    failed = [r for r, rep in enumerate(reports) if rep.error is not None]
    if failed:
        first = reports[failed[0]]
        message = (f"{entry}: rank {failed[0]} of {size} rejected its arguments: "
                   f"{first.error[0]}: {first.error[1]}")
        if len(failed) > 1:
            message += f" (ranks {' '.join(map(str, failed[1:]))} failed too)"
        if own_exc is not None:
            raise type(own_exc)(message) from own_exc
        raise Error(message)
    _check_fields_match(entry, reports)
    return reports


def _check_fields_match(entry, reports):
    for i, (arg, what, want) in enumerate(reports[0].fields):
        others = [(r, rep.fields[i][2]) for r, rep in enumerate(reports) if rep.fields[i][2] != want]
        if others:
            given = ", ".join(f"{value!r} on rank {r}" for r, value in others)
            raise Error(f"{entry}: {arg}: {what} is {want!r} on rank 0 but {given} "
                        "(it must be the same on every rank)")
