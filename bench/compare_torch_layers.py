"""Whole-layer comparison with torch 1.13's nn.MultiheadAttention, same process and threads:

  prefill  one forward of a cross-attention layer (embed 512, 8 heads) with 224 queries over a
           1500-token encoder output (Whisper's decoder on a 30 s window), need_weights=False.
  decode   32 decoder steps of one token each against that encoder output. torch re-projects
           the encoder output at every step (nn.MultiheadAttention has no cache); xattn projects
           it once into a KVCache (timed, inside the 32 steps) and runs forward_cached per step.

    PYTHONPATH=build/python /usr/bin/python3 bench/compare_torch_layers.py --threads 2 --runs 7

Both layers hold the same weights (xattn.nn.MultiheadAttention.from_torch). Median (min..max)
in ms of --runs timed repetitions after one warm-up; the max error of xattn against torch's
output is printed as a check. Writes compare_torch_layers.{md,json} into --out.
"""
import argparse
import datetime
import json
import os
import statistics
import time

import torch

import xattn
from compare_torch import cpu_name, set_torch_threads

EMBED, HEADS, QUERIES, MEMORY, STEPS = 512, 8, 224, 1500, 32


def timed(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def stats(times):
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    blas = set_torch_threads(args.threads)

    torch.manual_seed(0)
    module = torch.nn.MultiheadAttention(EMBED, HEADS).eval()
    layer = xattn.nn.MultiheadAttention.from_torch(module)
    memory = torch.randn(MEMORY, 1, EMBED)
    queries = torch.randn(QUERIES, 1, EMBED)
    tokens = torch.randn(STEPS, 1, EMBED)
    threads = dict(num_threads=args.threads)

    with torch.inference_mode():
        want = module(queries, memory, memory, need_weights=False)[0]
        got = layer(queries, memory, memory, need_weights=False, **threads)[0]
        prefill_error = (got - want).abs().max().item()

        def torch_decode():
            return [module(tokens[t:t + 1], memory, memory, need_weights=False)[0]
                    for t in range(STEPS)]

        def xattn_decode():
            cache = layer.make_cache(1, capacity=MEMORY)
            layer.extend_cache(cache, memory, memory)
            return [layer.forward_cached(tokens[t:t + 1], cache, **threads)[0]
                    for t in range(STEPS)]

        decode_error = (torch.cat(xattn_decode()) - torch.cat(torch_decode())).abs().max().item()
        results = {
            "prefill": {
                "torch": stats(timed(lambda: module(queries, memory, memory,
                                                    need_weights=False), args.runs)),
                "xattn": stats(timed(lambda: layer(queries, memory, memory, need_weights=False,
                                                   **threads), args.runs)),
                "max_error": prefill_error},
            "decode-32": {
                "torch": stats(timed(torch_decode, args.runs)),
                "xattn": stats(timed(xattn_decode, args.runs)),
                "max_error": decode_error},
        }

    meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "threads": args.threads,
            "torch": torch.__version__, "blas": blas, "xattn": xattn.version(),
            "simd_target": xattn.simd_target(), "runs": args.runs}
    lines = [f"xattn {meta['xattn']} ({meta['simd_target']}) vs torch {meta['torch']} "
             f"nn.MultiheadAttention, {args.threads} threads, {blas}, {meta['cpu']}, "
             f"{meta['date']}; median (min..max) of {args.runs} runs.", "",
             "| case | torch ms | xattn ms | speed-up | max error |", "|---|---|---|---|---|"]
    fmt = lambda s: f"{s['median_ms']:.2f} ({s['min_ms']:.2f}..{s['max_ms']:.2f})"  # noqa: E731
    for name, r in results.items():
        lines.append(f"| {name} | {fmt(r['torch'])} | {fmt(r['xattn'])} | "
                     f"{r['torch']['median_ms'] / r['xattn']['median_ms']:.2f}× | "
                     f"{r['max_error']:.1e} |")
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compare_torch_layers.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.out, "compare_torch_layers.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
