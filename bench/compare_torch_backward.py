"""Training-step comparison with torch 1.13: forward + backward time of xattn.attention against
torch's math path under autograd, on the suite's compute-bound shapes, same process and thread
count; and the peak memory of one training step at Lq = Lk = 8192, H = 8, D = 64, each side in
its own process.

    PYTHONPATH=build/python /usr/bin/python3 bench/compare_torch_backward.py --threads 2 --runs 5

Both sides compute out = attention(q, k, v) and then out.backward(dout) for f32 q, k, v that
require grad; torch math is softmax(q·kᵀ·scale [causal mask]) @ v. Median (min..max) in ms.
"""
import argparse
import math
import subprocess
import sys
import time

import torch

import xattn

SHAPES = {  # name: (B, Hq, Hkv, Lq, Lk, D, causal), the compute-bound suite shapes
    "whisper-prefill": (1, 8, 8, 224, 1500, 64, False),
    "sd-unet-xattn": (2, 8, 8, 4096, 77, 40, False),
    "perceiver-encode": (1, 8, 8, 512, 16384, 64, False),
    "self-2k-d64": (1, 16, 16, 2048, 2048, 64, False),
    "self-2k-d64-causal": (1, 16, 16, 2048, 2048, 64, True),
    "self-2k-d128": (1, 8, 8, 2048, 2048, 128, False),
    "self-2k-d128-causal": (1, 8, 8, 2048, 2048, 128, True),
}


def torch_math(q, k, v, causal):
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        lq, lk = s.shape[-2], s.shape[-1]
        s = s.masked_fill(torch.ones(lq, lk, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v


def step(attn, q, k, v, dout, causal):
    """One forward + backward; returns the gradients."""
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    attn(*leaves, causal).backward(dout)
    return [x.grad for x in leaves]


def timed(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], times[0], times[-1]


def memory_child(which, threads):
    """Runs one training step at L = 8192, H = 8, D = 64 and prints the process's peak RSS."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(1, 8, 8192, 64, generator=g) for _ in range(4))
    attn = torch_math if which == "torch" else (
        lambda a, b, c, causal: xattn.attention(a, b, c, causal=causal, num_threads=threads))
    step(attn, q, k, v, dout, False)
    # VmHWM is this process image's own peak; ru_maxrss would carry over the parent's size
    # through fork and exec.
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(kb / 1024.0)


def peak_memory_mb(which, threads):
    out = subprocess.run([sys.executable, __file__, "--memory-child", which, "--threads",
                          str(threads)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--memory-child", choices=["torch", "xattn"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.threads)
    torch.set_num_threads(args.threads)

    def ours(q, k, v, causal):
        return xattn.attention(q, k, v, causal=causal, num_threads=args.threads)

    print(f"forward + backward, f32, {args.threads} threads, median (min..max) of {args.runs} "
          f"runs; xattn {xattn.version()} ({xattn.simd_target()}), torch {torch.__version__}")
    print("| shape | torch math ms | xattn ms | speed-up | max grad error |")
    print("|---|---|---|---|---|")
    for name, (b, hq, hkv, lq, lk, d, causal) in SHAPES.items():
        g = torch.Generator().manual_seed(1)
        q = torch.randn(b, hq, lq, d, generator=g)
        k, v = (torch.randn(b, hkv, lk, d, generator=g) for _ in range(2))
        dout = torch.randn(b, hq, lq, d, generator=g)
        t = timed(lambda: step(torch_math, q, k, v, dout, causal), args.runs)
        x = timed(lambda: step(ours, q, k, v, dout, causal), args.runs)
        err = max((a - w).abs().max().item() for a, w in
                  zip(step(ours, q, k, v, dout, causal), step(torch_math, q, k, v, dout, causal)))
        print(f"| {name} | {t[0]*1e3:.1f} ({t[1]*1e3:.1f}..{t[2]*1e3:.1f}) | "
              f"{x[0]*1e3:.1f} ({x[1]*1e3:.1f}..{x[2]*1e3:.1f}) | {t[0]/x[0]:.2f}x | {err:.1e} |")
    torch_mb, xattn_mb = (peak_memory_mb(w, args.threads) for w in ("torch", "xattn"))
    print(f"\npeak resident memory of one training step at Lq = Lk = 8192, H = 8, D = 64: torch math "
          f"{torch_mb:.0f} MB, xattn {xattn_mb:.0f} MB ({xattn_mb / torch_mb:.2f} of torch's)")


if __name__ == "__main__":
    main()
