"""bench/compare_runs.py: paired before/after ratios of interleaved `xattn bench --json` runs."""

import json
import pathlib
import statistics
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "bench" / "compare_runs.py"


def write_run(path, ms, peak, read=None):
    case = {"name": "gqa-decode", "variant": "f32", "threads": 1, "xattn_ms_min": ms,
            "peak_fraction": peak, "kv_read_fraction": read}
    path.write_text(json.dumps({"results": [case]}))


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True)


def test_pairs_runs_by_round_and_takes_the_median_ratio(tmp_path):
    before = [1.5**i for i in range(1, 12)]  # rounds 1..11, on an ever busier host
    after = [b * (0.7 + 0.02 * i) for i, b in enumerate(before, start=1)]
    for i, (b, a) in enumerate(zip(before, after), start=1):
        write_run(tmp_path / f"before_{i}.json", b, 0.5 + i / 100, 0.7)
        write_run(tmp_path / f"after_{i}.json", a, 0.6 + i / 100, 0.8)
    # Given in different orders, the runs must still pair by the round number in their names.
    out = tmp_path / "table.md"
    result = run("--before", *sorted(tmp_path.glob("before_*")), "--after",
                 *sorted(tmp_path.glob("after_*"), reverse=True), "--out", out)
    assert result.returncode == 0, result.stderr
    row = [line for line in result.stdout.splitlines() if line.startswith("| gqa-decode")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    want_ratio = statistics.median(a / b for a, b in zip(after, before))
    assert float(cells[3]) == pytest.approx(want_ratio, abs=5e-4)
    peak_before = 100 * statistics.median(0.5 + i / 100 for i in range(1, 12))
    peak_after = 100 * statistics.median(0.6 + i / 100 for i in range(1, 12))
    assert cells[4] == f"{peak_before:.1f} → {peak_after:.1f}"
    assert cells[5] == "-"  # no backward timed
    assert cells[7] == "70.0 → 80.0"
    assert out.read_text() == result.stdout


def test_refuses_unpaired_runs(tmp_path):
    write_run(tmp_path / "before_1.json", 1.0, 0.5)
    write_run(tmp_path / "before_2.json", 1.0, 0.5)
    write_run(tmp_path / "after_1.json", 1.0, 0.5)
    result = run("--before", tmp_path / "before_1.json", tmp_path / "before_2.json",
                 "--after", tmp_path / "after_1.json")
    assert result.returncode != 0
    assert "--before has 2 runs, --after 1" in result.stderr
