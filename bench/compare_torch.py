"""Times xattn against torch 1.13's two CPU attention paths, in one process, same thread count.

    PYTHONPATH=build/python /usr/bin/python3 bench/compare_torch.py --threads 2 --runs 5
    ... --shape whisper-decode --shape self-2k-d64-causal   # a subset of the suite
    ... --shape 2,8,2,128,4096,64[,causal]                  # a custom B,Hq,Hkv,Lq,Lk,D (Dv = D)
    ... --dtype all                                         # f32 and bf16 inputs

Thread count: torch.set_num_threads(n), OpenBLAS's own pool set to n too (Debian's torch runs f32
matmul in OpenBLAS), and num_threads=n for xattn (after `import torch` its default would be 1).

Contenders (inputs q [B,Hq,Lq,D], k, v [B,Hkv,Lk,D], contiguous; causal = top-left diagonal):
  torch math  softmax((q @ kᵀ)·scale [masked_fill(-inf)]) @ v, in the input dtype. For GQA
              (Hq ≠ Hkv) K and V are first expanded with repeat_interleave on the head dim, inside
              the timed region: it is what a torch user pays.
  MHA core    what torch 1.13's F.multi_head_attention_forward (nn.MultiheadAttention off its
              fast path, i.e. any cross-attention) runs between the in-projections and out_proj:
              the bool attn_mask [Lq,Lk] (True = masked) converted to a float -inf mask, then
              q / sqrt(D); torch.baddbmm(mask, q, kᵀ) (torch.bmm without mask); softmax; torch.bmm.
              1.13 has no fused kernel on this path (torch._C._nn._scaled_dot_product_attention
              exists but MHA does not call it). Timed on the same tensors viewed as [B·H, L, D]
              (GQA: K/V expanded first, timed); MHA's [L,B,E] <-> [B·H,L,D] layout copies are not.
              (MHA's fast path, torch._native_multi_head_attention, is only taken for unmasked
              self-attention in eval mode with batch_first=True; it is not timed here.)
  xattn       xattn.attention(q, k, v, causal=..., num_threads=n) on the 4-D tensors (GQA native);
              for bf16 with bf16_probabilities=True, since torch's bf16 paths also round the
              softmax weights to bf16 before multiplying by v.
The bool causal mask is built once per shape, untimed (a model would keep it as a buffer).
Everything runs under torch.inference_mode().

Each contender: one warm-up call, then --runs timed calls; median (min..max) in ms. A contender
whose warm-up fails or takes over --max-seconds is reported n/a. GFLOP/s use 4·B·Hq·Lq·Lk·D
(halved for causal). Errors are max |out - ref| against a float64 reference (the math path in
float64 on the very same f32/bf16 values), computed once per shape and dtype.
Writes compare_torch.md, compare_torch.json and compare_torch.png into --out (default
bench/results next to this script) and prints the markdown table.
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch

import xattn

SUITE = {  # name: (B, Hq, Hkv, Lq, Lk, D)
    "whisper-decode": (5, 8, 8, 1, 1500, 64),
    "whisper-prefill": (1, 8, 8, 224, 1500, 64),
    "sd-unet-xattn": (2, 8, 8, 4096, 77, 40),
    "perceiver-encode": (1, 8, 8, 512, 16384, 64),
    "self-2k-d64": (1, 16, 16, 2048, 2048, 64),
    "self-2k-d64-causal": (1, 16, 16, 2048, 2048, 64),
    "self-2k-d128": (1, 8, 8, 2048, 2048, 128),
    "self-2k-d128-causal": (1, 8, 8, 2048, 2048, 128),
    "gqa-decode": (1, 32, 8, 1, 8192, 128),
    "crossvit-cls": (64, 6, 6, 1, 401, 32),
}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
CONTENDERS = ("torch_math", "mha_core", "xattn")
LABELS = {"torch_math": "torch math", "mha_core": "MHA core", "xattn": "xattn"}


@dataclass
class Shape:
    name: str
    B: int
    Hq: int
    Hkv: int
    Lq: int
    Lk: int
    D: int
    causal: bool

    @property
    def flops(self):
        return 4 * self.B * self.Hq * self.Lq * self.Lk * self.D / (2 if self.causal else 1)

    @property
    def dims(self):
        return f"{self.B},{self.Hq},{self.Hkv},{self.Lq},{self.Lk},{self.D}"


def parse_shape(spec):
    """A suite name, or 'B,Hq,Hkv,Lq,Lk,D' with an optional ',causal'."""
    if spec in SUITE:
        return Shape(spec, *SUITE[spec], causal=spec.endswith("-causal"))
    fields = spec.split(",")
    causal = fields[-1] == "causal"
    try:
        dims = [int(x) for x in fields[:-1 if causal else None]]
    except ValueError:
        dims = []
    if len(dims) != 6 or min(dims) < 1 or dims[1] % dims[2]:
        raise argparse.ArgumentTypeError(
            f"{spec!r}: expected one of {', '.join(SUITE)} or B,Hq,Hkv,Lq,Lk,D[,causal] "
            "with Hq a multiple of Hkv")
    return Shape(f"custom-{spec}", *dims, causal=causal)


def make_inputs(shape, dtype):
    """q, k, v drawn from N(0, 1) in f32 (seeded per shape), then cast to dtype."""
    torch.manual_seed(0)
    q = torch.randn(shape.B, shape.Hq, shape.Lq, shape.D)
    k, v = (torch.randn(shape.B, shape.Hkv, shape.Lk, shape.D) for _ in range(2))
    return [x.to(dtype) for x in (q, k, v)]


def causal_mask(shape):
    """Bool [Lq, Lk], True = masked (torch's attn_mask convention), top-left diagonal; or None."""
    if not shape.causal:
        return None
    return torch.ones(shape.Lq, shape.Lk, dtype=torch.bool).triu(1)


def expand_kv(q, k, v):
    """K and V repeated per query head, as a torch user must do for GQA."""
    groups = q.shape[1] // k.shape[1]
    if groups == 1:
        return k, v
    return k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)


def torch_math(q, k, v, mask):
    k, v = expand_kv(q, k, v)
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s, -1) @ v


def mha_core(q, k, v, mask):
    """F.multi_head_attention_forward's attention core (torch 1.13), on [B·H, L, D] views."""
    k, v = expand_kv(q, k, v)
    B, H, Lq, D = q.shape
    q3, k3, v3 = (x.reshape(B * H, x.shape[2], x.shape[3]) for x in (q, k, v))
    q3 = q3 / math.sqrt(D)
    if mask is None:
        w = torch.bmm(q3, k3.transpose(-2, -1))
    else:
        float_mask = torch.zeros_like(mask.unsqueeze(0), dtype=q3.dtype)
        float_mask.masked_fill_(mask, float("-inf"))
        w = torch.baddbmm(float_mask, q3, k3.transpose(-2, -1))
    w = torch.softmax(w, dim=-1)
    return torch.bmm(w, v3).view(B, H, Lq, v.shape[3])


def reference(q, k, v, mask):
    """The math path in float64 on the same values."""
    return torch_math(q.double(), k.double(), v.double(), mask)


def time_calls(fn, runs, max_seconds):
    """One warm-up and `runs` timed calls: (times in s, last output), or (None, why it is n/a)."""
    try:
        t0 = time.perf_counter()
        out = fn()
        warm = time.perf_counter() - t0
    except RuntimeError as e:
        return None, f"unsupported: {str(e).splitlines()[0]}"
    if warm > max_seconds:
        return None, f"too slow: warm-up {warm:.3g} s > --max-seconds {max_seconds:g}"
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def summarize(times, out, ref, flops):
    """The JSON record of one contender on one shape."""
    if times is None:
        return {"status": "n/a", "reason": out}
    ordered = sorted(times)
    median = ordered[len(ordered) // 2]
    return {"status": "ok", "times_ms": [t * 1e3 for t in times], "median_ms": median * 1e3,
            "min_ms": ordered[0] * 1e3, "max_ms": ordered[-1] * 1e3,
            "gflops": flops / median / 1e9,
            "max_abs_err": (out.double() - ref).abs().max().item()}


def bench_case(shape, dtype_name, args):
    """All contenders on one shape and dtype: the JSON record."""
    q, k, v = make_inputs(shape, DTYPES[dtype_name])
    mask = causal_mask(shape)
    ref = reference(q, k, v, mask)
    calls = {
        "torch_math": lambda: torch_math(q, k, v, mask),
        "mha_core": lambda: mha_core(q, k, v, mask),
        # torch's bf16 paths round the softmax weights to bf16 before they weight v; xattn does
        # the same only when asked (bf16_probabilities), so bf16 compares like with like.
        "xattn": lambda: xattn.attention(q, k, v, causal=shape.causal, num_threads=args.threads,
                                         bf16_probabilities=dtype_name == "bf16"),
    }
    results = {}
    for name, fn in calls.items():
        times, out = time_calls(fn, args.runs, args.max_seconds)
        results[name] = summarize(times, out, ref, shape.flops)
        del out
    speedup = {}
    if results["xattn"]["status"] == "ok":
        for name in ("torch_math", "mha_core"):
            if results[name]["status"] == "ok":
                speedup[name] = results[name]["median_ms"] / results["xattn"]["median_ms"]
    return {**asdict(shape), "dtype": dtype_name, "gflop": shape.flops / 1e9,
            "contenders": results, "xattn_speedup_over": speedup}


def fmt_ms(r):
    if r["status"] != "ok":
        return "n/a"
    return f"{r['median_ms']:.2f} ({r['min_ms']:.2f}..{r['max_ms']:.2f})"


def fmt_num(x, spec):
    return "n/a" if x is None else format(x, spec)


def header_line(meta):
    return (f"{meta['date']} · threads: {meta['threads']} · torch {meta['torch']} with "
            f"{meta['blas']} · xattn {meta['xattn']} ({meta['simd_target']}) · median (min..max) "
            f"of {meta['runs']} runs after one warm-up · {meta['cpu']}")


def markdown(records, meta):
    """The results as a markdown document: header line, table, notes."""
    cols = ["shape", "B,Hq,Hkv,Lq,Lk,D", "dtype", "torch math ms", "MHA core ms", "xattn ms",
            "GFLOP/s math / MHA / xattn", "xattn vs math", "xattn vs MHA",
            "max err xattn", "max err math"]
    lines = [f"# xattn vs torch {meta['torch']}", "", header_line(meta), "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        c = r["contenders"]
        gflops = " / ".join(fmt_num(c[n].get("gflops"), ".1f") for n in CONTENDERS)
        sp = [fmt_num(r["xattn_speedup_over"].get(n), ".2f") for n in ("torch_math", "mha_core")]
        row = [r["name"], f"{r['B']},{r['Hq']},{r['Hkv']},{r['Lq']},{r['Lk']},{r['D']}",
               r["dtype"], *(fmt_ms(c[n]) for n in CONTENDERS), gflops,
               *(s if s == "n/a" else s + "×" for s in sp),
               fmt_num(c["xattn"].get("max_abs_err"), ".1e"),
               fmt_num(c["torch_math"].get("max_abs_err"), ".1e")]
        lines.append("| " + " | ".join(row) + " |")
    reasons = [f"- {r['name']} {r['dtype']} {LABELS[n]}: {c['reason']}"
               for r in records for n, c in r["contenders"].items() if c["status"] != "ok"]
    if reasons:
        lines += ["", "n/a:", *reasons]
    lines += ["", "FLOPs = 4·B·Hq·Lq·Lk·D (halved for causal). Errors: max |out − ref|, ref = "
              "float64 math on the same inputs. See the docstring of bench/compare_torch.py for "
              "exactly what each contender times."]
    return "\n".join(lines) + "\n"


def write_chart(records, meta, path):
    """Grouped bars of GFLOP/s (log scale) per shape, one panel per dtype."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(dict.fromkeys(r["dtype"] for r in records))
    n_groups = max(sum(r["dtype"] == d for r in records) for d in dtypes)
    fig, axes = plt.subplots(len(dtypes), 1, squeeze=False,
                             figsize=(max(6.0, 1.25 * n_groups + 2), 4.5 * len(dtypes)))
    colors = {"torch_math": "#9e9e9e", "mha_core": "#5c85d6", "xattn": "#e07b39"}
    width = 0.27
    for ax, dtype in zip(axes[:, 0], dtypes):
        rows = [r for r in records if r["dtype"] == dtype]
        for i, name in enumerate(CONTENDERS):
            xs = [g + (i - 1) * width for g in range(len(rows))]
            ys = [r["contenders"][name].get("gflops", 0.0) for r in rows]
            bars = ax.bar(xs, ys, width, label=LABELS[name], color=colors[name])
            if name == "xattn":  # label xattn's bars with its speed-up over torch math
                for bar, r in zip(bars, rows):
                    sp = r["xattn_speedup_over"].get("torch_math")
                    if sp is not None:
                        ax.annotate(f"{sp:.1f}×", (bar.get_x() + width / 2, bar.get_height()),
                                    ha="center", va="bottom", fontsize=8)
        ax.set_yscale("log")
        top = max((r["contenders"][n].get("gflops", 0.0) for r in rows for n in CONTENDERS),
                  default=1.0)
        ax.set_ylim(top=max(top, 1e-3) * 4)  # room for the labels and the legend
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["name"] for r in rows], rotation=25, ha="right", fontsize=9)
        ax.set_ylabel("GFLOP/s (log)")
        ax.set_title(f"{dtype} inputs, {meta['threads']} threads — labels: xattn speed-up over "
                     "torch math", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=9, ncol=3, loc="upper left")
    fig.suptitle(f"xattn ({meta['simd_target']}) vs torch {meta['torch']} · {meta['date']}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def set_torch_threads(n):
    """torch's intra-op threads, and OpenBLAS's own pool (Debian's torch does f32 matmul there;
    torch.set_num_threads does not reach it). Returns the BLAS in use, for the header."""
    torch.set_num_threads(n)
    with open("/proc/self/maps") as f:
        openblas = next((line.split()[-1] for line in f if "libopenblas" in line), None)
    if openblas is None:
        return "MKL" if torch.backends.mkl.is_available() else "unknown BLAS"
    lib = ctypes.CDLL(openblas)
    lib.openblas_set_num_threads(n)
    return f"OpenBLAS ({lib.openblas_get_num_threads()} threads)"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="for torch and xattn (default 2)")
    ap.add_argument("--runs", type=int, default=5, help="timed calls after one warm-up")
    ap.add_argument("--shape", type=parse_shape, action="append",
                    help="suite name or B,Hq,Hkv,Lq,Lk,D[,causal]; repeatable (default: suite)")
    ap.add_argument("--dtype", choices=["f32", "bf16", "all"], default="f32")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="a contender whose warm-up takes longer is reported n/a")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results"), help="results folder")
    return ap.parse_args()


def main():
    args = parse_args()
    if args.runs < 1 or args.threads < 1:
        raise SystemExit("--runs and --threads must be at least 1")
    start = time.perf_counter()
    blas = set_torch_threads(args.threads)
    shapes = args.shape or [parse_shape(name) for name in SUITE]
    dtypes = list(DTYPES) if args.dtype == "all" else [args.dtype]
    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "threads": args.threads,
            "runs": args.runs, "torch": torch.__version__, "xattn": xattn.version(),
            "simd_target": xattn.simd_target(), "blas": blas, "cpu": cpu_name()}
    records = []
    with torch.inference_mode():
        for shape in shapes:
            for dtype in dtypes:
                records.append(bench_case(shape, dtype, args))
    meta["wall_s"] = time.perf_counter() - start
    text = markdown(records, meta)
    print(text, end="")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compare_torch.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "compare_torch.json"), "w") as f:
        json.dump({"meta": meta, "results": records}, f, indent=1)
    write_chart(records, meta, os.path.join(args.out, "compare_torch.png"))
    print(f"\nwrote {args.out}/compare_torch.{{md,json,png}} in {meta['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
