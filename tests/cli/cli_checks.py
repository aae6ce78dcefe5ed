"""Assertions shared by the CLI test files."""


def assert_usage_error(proc, *needles):
    """Exit status 2 and exactly one line on stderr, "xattn: ...", containing every needle."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("xattn: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, proc.stderr)
    return lines[0]
