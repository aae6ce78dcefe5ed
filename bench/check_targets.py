"""Checks several `xattn bench --json` runs against the speed targets of issue 14 and prints one
markdown table: per target and case, the median (min..max) over the runs of each run's own
figure, the target, and whether the median meets it.

    for i in 1 2 3; do
      build/xattn bench --no-baseline --threads 1,2 --backward --json /tmp/targets/run$i.json
    done
    /usr/bin/python3 bench/check_targets.py /tmp/targets/run*.json --out /tmp/targets/targets.md

The targets (every figure is taken against the peak and bandwidth measured in its own run):
- forward, f32: >= 75% of the FMA peak on every compute-bound shape (Lq > 1), sd-unet-xattn 50%;
- bf16p (bf16 with bf16 probabilities): >= 1.6x the f32 speed on those shapes;
- causal: <= 0.55x the time of the same shape without the mask, in the same run and dtype;
- backward, f32: >= 45% of the FMA peak on the compute-bound shapes (bwd/fwd shown beside it);
- decoder steps (Lq = 1) whose K and V exceed the last-level cache: >= 80% of the read bandwidth.
"""
import argparse
import json
import statistics

FORWARD = 0.75
FORWARD_EXCEPTIONS = {"sd-unet-xattn": 0.50}
BF16P_OVER_F32 = 1.6
CAUSAL_RATIO = 0.55
BACKWARD = 0.45
DECODE_READ = 0.80
LIMITS_MOVED = 0.10  # a run whose peak or bandwidth moved more is flagged


def cases_by_key(runs):
    """{(name, variant, threads): [that case's result in each run that has it]}, in first-run order."""
    cases = {}
    for run in runs:
        for r in run["results"]:
            cases.setdefault((r["name"], r["variant"], r["threads"]), []).append(r)
    return cases


def causal_ratios(runs, key):
    """Per run, the causal case's time over its twin's (the same name without -causal)."""
    name, variant, threads = key
    twin = name.removesuffix("-causal")
    ratios = []
    for run in runs:
        by_key = {(r["name"], r["variant"], r["threads"]): r for r in run["results"]}
        if key in by_key and (twin, variant, threads) in by_key:
            ratios.append(by_key[key]["xattn_ms"] / by_key[(twin, variant, threads)]["xattn_ms"])
    return ratios


def spread(values, fmt):
    m = statistics.median(values)
    return m, f"{fmt(m)} ({fmt(min(values))}..{fmt(max(values))})"


def pct(x):
    return f"{100 * x:.1f}%"


def times(x):
    return f"{x:.2f}×"


def rows(runs):
    """(target, case, threads, figure, target text, met) for every case a target applies to."""
    out = []

    def add(target, key, values, fmt, goal, at_least, extra=""):
        values = [v for v in values if v is not None]
        if not values:
            return
        m, text = spread(values, fmt)
        met = m >= goal if at_least else m <= goal
        out.append((target, f"{key[0]} {key[1]}", key[2], text + extra,
                    ("≥ " if at_least else "≤ ") + fmt(goal), "yes" if met else "**no**"))

    for key, rs in cases_by_key(runs).items():
        name, variant, _ = key
        compute_bound = rs[0]["Lq"] > 1
        if compute_bound and variant == "f32":
            add("forward", key, [r["peak_fraction"] for r in rs], pct,
                FORWARD_EXCEPTIONS.get(name, FORWARD), True)
            bwd_fwd = [r["backward_over_forward"] for r in rs if r["backward_over_forward"]]
            extra = f", bwd/fwd {spread(bwd_fwd, times)[1]}" if bwd_fwd else ""
            add("backward", key, [r["backward_peak_fraction"] for r in rs], pct, BACKWARD, True,
                extra)
        if compute_bound and variant == "bf16p":
            add("bf16p ×f32", key, [r["over_f32"] for r in rs], times, BF16P_OVER_F32, True)
        if name.endswith("-causal"):
            add("causal / non-causal", key, causal_ratios(runs, key), times, CAUSAL_RATIO, False)
        if not compute_bound and all(r.get("kv_beyond_llc") for r in rs):
            add("decode beyond LLC, % read bw", key, [r["kv_read_fraction"] for r in rs], pct,
                DECODE_READ, True)
    order = ["forward", "bf16p ×f32", "causal / non-causal", "backward",
             "decode beyond LLC, % read bw"]
    return sorted(out, key=lambda row: order.index(row[0]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="JSON files written by xattn bench --json")
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args()
    runs = [json.load(open(path)) for path in args.runs]
    m = runs[0]["machine"]
    table = rows(runs)
    met = sum(row[-1] == "yes" for row in table)
    lines = [f"{m['cpu']}, SIMD target {m['simd_target']}, xattn {m['xattn_version']}: "
             f"{len(runs)} runs of `xattn bench`; each figure: median (min..max) over the runs. "
             f"{met} of {len(table)} met.",
             "",
             "| target | case | threads | measured | target | met |",
             "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in table]
    moved = [f"{path} ({pct(run['machine']['limits_change'])})" for path, run in zip(args.runs, runs)
             if run["machine"]["limits_change"] > LIMITS_MOVED]
    if moved:
        lines += ["", "The measured limits moved by more than " + pct(LIMITS_MOVED) + " between the "
                  "start and the end of " + ", ".join(moved) + ": other load on the host; their "
                  "fractions may be off by as much."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
