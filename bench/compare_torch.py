"""Times xattn against torch's math path (softmax(q·kᵀ·scale + mask)·v) in one process, with the
same thread count, and prints medians (min..max) of several runs.

    PYTHONPATH=build/python /usr/bin/python3 bench/compare_torch.py [--threads 2] [--runs 5]
"""
import argparse
import math
import time

import torch

import xattn


def torch_math(q, k, v, causal):
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        lq, lk = s.shape[-2], s.shape[-1]
        s = s.masked_fill(torch.ones(lq, lk, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v


def timed(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], times[0], times[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--shape", default="1,8,2048,64", help="B,H,L,D (Lq = Lk = L)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B, H, L, D = (int(x) for x in args.shape.split(","))
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, L, D) for _ in range(3))
    print(f"shape [B,H,L,D] = [{B},{H},{L},{D}], {args.threads} threads, "
          f"SIMD target {xattn.simd_target()}, median (min..max) of {args.runs} runs")
    print(f"{'case':<10} {'torch math ms':>22} {'xattn ms':>22} {'xattn GFLOP/s':>14} {'speed-up':>9} {'max err':>9}")
    for causal in (False, True):
        flops = 4 * B * H * L * L * D / (2 if causal else 1)
        t_med, t_min, t_max = timed(lambda: torch_math(q, k, v, causal), args.runs)
        x_med, x_min, x_max = timed(
            lambda: xattn.attention(q, k, v, causal=causal, num_threads=args.threads), args.runs)
        err = (xattn.attention(q, k, v, causal=causal) - torch_math(q, k, v, causal)).abs().max().item()
        name = "causal" if causal else "full"
        print(f"{name:<10} {t_med*1e3:8.1f} ({t_min*1e3:.1f}..{t_max*1e3:.1f}) "
              f"{x_med*1e3:8.1f} ({x_min*1e3:.1f}..{x_max*1e3:.1f}) {flops/x_med/1e9:14.1f} "
              f"{t_med/x_med:8.2f}x {err:9.1e}")


if __name__ == "__main__":
    main()
