"""Compares two builds' `xattn bench --json` runs taken in interleaved rounds (before 1, after 1,
before 2, after 2, ...), so that both meet the same load on a shared host: per case, the median
over rounds of the paired time ratio after/before (of each run's fastest call; forward, and
backward where timed), and the medians of % of peak and % of read bandwidth before -> after, as
a markdown table (printed, and written with --out).

    for i in 1 2 3 4 5 6 7 8; do
      /tmp/old/xattn bench --no-baseline --dtype f32 --threads 1,2 --shape gqa-decode --json /tmp/cmp/before_$i.json
      build/xattn bench --no-baseline --dtype f32 --threads 1,2 --shape gqa-decode --json /tmp/cmp/after_$i.json
    done
    /usr/bin/python3 bench/compare_runs.py --before /tmp/cmp/before_*.json --after /tmp/cmp/after_*.json

Runs are paired in the order of the number in their file names.
"""
import argparse
import json
import re
import statistics


def round_number(path):
    numbers = re.findall(r"\d+", path.rsplit("/", 1)[-1])
    return int(numbers[-1]) if numbers else 0


def load(paths):
    runs = []
    for path in sorted(paths, key=round_number):
        with open(path) as f:
            results = json.load(f)["results"]
        runs.append({(r["name"], r["variant"], r["threads"]): r for r in results})
    return runs


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(x, spec):
    return "-" if x is None else spec.format(x)


def table(before, after):
    if len(before) != len(after):
        raise SystemExit(f"--before has {len(before)} runs, --after {len(after)}: pair them by round")
    lines = [
        "| shape | dtype | thr | fwd time after/before | fwd %peak before → after"
        " | bwd time after/before | bwd %peak before → after | %read before → after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in before[0]:
        if not all(case in run for run in before + after):
            continue

        def ratio(field):
            pairs = [(b[case].get(field), a[case].get(field)) for b, a in zip(before, after)]
            return median([y / x for x, y in pairs if x and y])

        def percent(runs, field):
            m = median([run[case].get(field) for run in runs])
            return None if m is None else 100 * m

        def both(field):
            return f"{fmt(percent(before, field), '{:.1f}')} → {fmt(percent(after, field), '{:.1f}')}"

        name, dtype, threads = case
        lines.append(
            f"| {name} | {dtype} | {threads} | {fmt(ratio('xattn_ms_min'), '{:.3f}')} | "
            f"{both('peak_fraction')} | {fmt(ratio('backward_ms_min'), '{:.3f}')} | "
            f"{both('backward_peak_fraction')} | {both('kv_read_fraction')} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", nargs="+", required=True, help="the old build's JSON runs")
    parser.add_argument("--after", nargs="+", required=True, help="the new build's JSON runs")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    text = table(load(args.before), load(args.after))
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
