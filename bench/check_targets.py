"""Checks several `xattn bench --json` runs against the speed targets of issue 14 and prints one
markdown table: per target and case, the median (min..max) over the runs of each run's own
figure, the same figure at each run's fastest call (what the kernel does while the host leaves it
alone), the target, and whether the median meets it.

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

from summarize_runs import pct, times  # the same formats as the summaries

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


def per_run(runs, figure):
    """figure(case) for every run, where case(name, variant, threads) finds a result of that run.
    A run that lacks a case the figure needs is skipped, and so is a figure of None."""
    values = []
    for run in runs:
        by_key = {(r["name"], r["variant"], r["threads"]): r for r in run["results"]}
        try:
            values.append(figure(lambda *key: by_key[key]))
        except KeyError:
            pass
    return [v for v in values if v is not None]


def spread(values, fmt):
    m = statistics.median(values)
    return m, f"{fmt(m)} ({fmt(min(values))}..{fmt(max(values))})"


def call_ms(r, best, ms="xattn_ms"):
    """r's median time, or with best its fastest call's."""
    return r[ms + "_min"] if best else r[ms]


def fraction(r, name, best, ms="xattn_ms"):
    """r's fraction of a limit (name), reached at its median time or with best its fastest call."""
    return None if r[name] is None else r[name] * r[ms] / call_ms(r, best, ms)


def rows(runs):
    """(target, case, threads, median figure, at the fastest call, target text, met) for every
    case a target applies to. The fastest call of each case, against the same limits, shows what
    the kernel does while the host leaves it alone; the target is judged on the median."""
    out = []

    def add(target, key, figure, fmt, goal, at_least, extra=""):
        # figure(case, best): the figure of one run, where case(name, variant, threads) finds
        # that run's results, at the median time or (best) at the fastest call.
        values = per_run(runs, lambda case: figure(case, False))
        if not values:
            return
        m, text = spread(values, fmt)
        best = spread(per_run(runs, lambda case: figure(case, True)), fmt)[1]
        met = m >= goal if at_least else m <= goal
        out.append((target, f"{key[0]} {key[1]}", key[2], text + extra, best,
                    ("≥ " if at_least else "≤ ") + fmt(goal), "yes" if met else "**no**"))

    for key, rs in cases_by_key(runs).items():
        name, variant, threads = key
        compute_bound = rs[0]["Lq"] > 1
        this = lambda case: case(*key)  # noqa: E731
        if compute_bound and variant == "f32":
            add("forward", key, lambda case, best: fraction(this(case), "peak_fraction", best),
                pct, FORWARD_EXCEPTIONS.get(name, FORWARD), True)
            bwd_fwd = [r["backward_over_forward"] for r in rs if r["backward_over_forward"]]
            extra = f", bwd/fwd {spread(bwd_fwd, times)[1]}" if bwd_fwd else ""
            add("backward", key,
                lambda case, best: fraction(this(case), "backward_peak_fraction", best,
                                            "backward_ms"),
                pct, BACKWARD, True, extra)
        if compute_bound and variant == "bf16p":
            add("bf16p ×f32", key,
                lambda case, best: call_ms(case(name, "f32", threads), best) /
                call_ms(this(case), best),
                times, BF16P_OVER_F32, True)
        if name.endswith("-causal"):
            twin = name.removesuffix("-causal")
            add("causal / non-causal", key,
                lambda case, best: call_ms(this(case), best) /
                call_ms(case(twin, variant, threads), best),
                times, CAUSAL_RATIO, False)
        if not compute_bound and all(r.get("kv_beyond_llc") for r in rs):
            add("decode beyond LLC, % read bw", key,
                lambda case, best: fraction(this(case), "kv_read_fraction", best),
                pct, DECODE_READ, True)
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
             "| target | case | threads | median | at the fastest call | target | met |",
             "|---|---|---|---|---|---|---|"]
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
