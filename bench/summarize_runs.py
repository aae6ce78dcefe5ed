"""Summarises several `xattn bench --json` runs: per case, the median (min..max) over the runs of
each run's figures, as a markdown table (printed, and written with --out).

    for i in 1 2 3 4 5; do build/xattn bench --threads 2 --json /tmp/bench$i.json; done
    /usr/bin/python3 bench/summarize_runs.py /tmp/bench[1-5].json --out bench/results/bench.md

Every ratio (% of peak, ×f32, speed-up, % of copy bandwidth) is taken within its own run, against
that run's measured limits and baseline, and only then summarised across runs. ×threads: the
first thread count's time over this one's (runs with --threads 1,2).
"""
import argparse
import json
import statistics


def spread(values, fmt):
    """'median (min..max)' of the values, each formatted with fmt; '-' if there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = statistics.median(values)
    return f"{fmt(m)} ({fmt(min(values))}..{fmt(max(values))})"


def pct(x):
    return f"{100 * x:.1f}%"


def times(x):
    return f"{x:.2f}×"


def ms(x):
    return f"{x:.3g}"


def table(runs):
    keys = []  # case order of the first run
    cases = {}
    for run in runs:
        for r in run["results"]:
            key = (r["name"], r["variant"], r["threads"])
            if key not in cases:
                keys.append(key)
                cases[key] = []
            cases[key].append(r)
    lines = ["| shape | dtype | threads | xattn ms | % of peak | ×f32 | ×threads | "
             "speed-up over unfused | K/V % of copy bw |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in keys:
        rs = cases[key]
        col = lambda field: [r[field] for r in rs]  # noqa: E731
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {spread(col('xattn_ms'), ms)} | "
                     f"{spread(col('peak_fraction'), pct)} | {spread(col('over_f32'), times)} | "
                     f"{spread(col('thread_speedup'), times)} | "
                     f"{spread(col('speedup'), times)} | {spread(col('kv_copy_fraction'), pct)} |")
    return "\n".join(lines)


def machine(runs):
    limits = [lim for run in runs for lim in run["machine"]["limits"]]
    out = []
    for threads in sorted({lim["threads"] for lim in limits}):
        same = [lim for lim in limits if lim["threads"] == threads]
        out.append(f"- {threads} threads: f32 FMA peak "
                   f"{spread([lim['fma_gflops'] for lim in same], lambda x: f'{x:.1f}')} GFLOP/s, "
                   f"bf16 dot peak "
                   f"{spread([lim['bf16_dot_gflops'] for lim in same], lambda x: f'{x:.1f}')} "
                   f"GFLOP/s, copy "
                   f"{spread([lim['copy_gbps'] for lim in same], lambda x: f'{x:.1f}')} GB/s")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="JSON files written by xattn bench --json")
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args()
    runs = [json.load(open(path)) for path in args.runs]
    m = runs[0]["machine"]
    text = (f"xattn {m['xattn_version']}, SIMD target {m['simd_target']}, {len(runs)} runs of "
            f"`xattn bench`; each cell: median (min..max) over the runs.\n\n"
            f"{machine(runs)}\n\n{table(runs)}\n")
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
