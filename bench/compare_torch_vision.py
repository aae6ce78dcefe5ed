"""xattn's vision attention modules against their official formulations in plain torch 1.13, same
process, threads and weights:
  ccnet  CrissCrossAttention at CCNet's size after the backbone ([2, 512, 97, 97], recurrence 1)
         against the official code's formulation: the three 1x1 convolutions, per-column and
         per-row bmm's for the energies [B, H, W, H] and [B, H, W, W] (the column's centre set to
         -inf), one softmax over their concatenation, and two more bmm's for the output.
  lsda   LSDA at CrossFormer-S's stage 1 (56 x 56 tokens, width 96, 3 heads, G = 7, I = 8; both
         SDA and LDA) against the same grouping with torch's math attention inside the groups:
         q·scale @ kᵀ + the position bias, softmax, @ v (the official Attention.forward).
Each case runs forward under torch.no_grad() and forward + backward (gradients to the parameters
and the input). Before timing, outputs are compared (max relative error = max|xattn - torch| /
max|torch|; over 1e-4 the program stops). Times: one warm-up call, then --runs timed calls;
median (min..max) in ms.

    PYTHONPATH=build/python /usr/bin/python3 bench/compare_torch_vision.py --threads 2 --runs 7

Writes --out (markdown, default bench/results/compare_torch_vision.md) and the same name with
.json, and prints the markdown.
"""

import argparse
import datetime
import json
import os
import shlex
import sys
import time

import torch

import xattn
from compare_torch import cpu_name, set_torch_threads
from compare_torch_models import fmt_time, log, rel_error, timed
from xattn.models import LSDA, CrissCrossAttention

TOLERANCE = 1e-4
CCNET = dict(batch=2, channels=512, height=97, width=97)
LSDA_SHAPE = dict(height=56, width=56, dim=96, num_heads=3, group_size=7, interval=8)
LSDA_BATCHES = [1, 8]


def official_criss_cross(module, x):
    """γ·CC(x) + x as the official CCNet code computes it (its tensors and bmm's, rewritten)."""
    B, _, H, W = x.shape
    q, k, v = module.query_conv(x), module.key_conv(x), module.value_conv(x)
    q_h = q.permute(0, 3, 1, 2).contiguous().view(B * W, -1, H).permute(0, 2, 1)  # [BW, H, C']
    q_w = q.permute(0, 2, 1, 3).contiguous().view(B * H, -1, W).permute(0, 2, 1)  # [BH, W, C']
    k_h = k.permute(0, 3, 1, 2).contiguous().view(B * W, -1, H)
    k_w = k.permute(0, 2, 1, 3).contiguous().view(B * H, -1, W)
    v_h = v.permute(0, 3, 1, 2).contiguous().view(B * W, -1, H)
    v_w = v.permute(0, 2, 1, 3).contiguous().view(B * H, -1, W)
    centre = -torch.diag(torch.full((H,), float("inf"))).unsqueeze(0).repeat(B * W, 1, 1)
    energy_h = (torch.bmm(q_h, k_h) + centre).view(B, W, H, H).permute(0, 2, 1, 3)
    energy_w = torch.bmm(q_w, k_w).view(B, H, W, W)
    att = torch.softmax(torch.cat([energy_h, energy_w], 3), dim=3)
    att_h = att[:, :, :, :H].permute(0, 2, 1, 3).contiguous().view(B * W, H, H)
    att_w = att[:, :, :, H:H + W].contiguous().view(B * H, W, W)
    out_h = torch.bmm(v_h, att_h.permute(0, 2, 1)).view(B, W, -1, H).permute(0, 2, 3, 1)
    out_w = torch.bmm(v_w, att_w.permute(0, 2, 1)).view(B, H, -1, W).permute(0, 2, 1, 3)
    return module.gamma * (out_h + out_w) + x


def torch_lsda(module, x, H, W):
    """module's LSDA with torch's math attention in the groups: the same grouping, qkv, position
    bias and proj (plain torch layers), only the attention differs."""
    gh, gw = module.group_shape(H, W)
    C, heads = module.dim, module.num_heads
    groups, shape = module.group(x, H, W)
    n, N = groups.shape[:2]
    q, k, v = module.qkv(groups).reshape(n, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    attn = (q * (C // heads) ** -0.5) @ k.transpose(-2, -1) + module.pos(gh, gw).unsqueeze(0)
    out = (torch.softmax(attn, dim=-1) @ v).transpose(1, 2).reshape(n, N, C)
    return module.ungroup(module.proj(out), shape)


def grad_error(got, want):
    """Max relative error over the gradients, each against its own largest value; except that a
    gradient which vanishes in exact arithmetic (a key bias shifts every score of a query alike,
    and the softmax cancels it) is rounding noise on both sides, only checked to be negligible
    against the largest gradient of all."""
    scale = max(w.abs().max().item() for w in want)
    worst = 0.0
    for a, b in zip(got, want):
        if b.abs().max().item() <= TOLERANCE * scale:
            worst = max(worst, (a - b).abs().max().item() / scale)
        else:
            worst = max(worst, rel_error(a, b))
    return worst


def compare(name, module, run_xattn, run_torch, x, runs):
    """Checks, then times, both variants: forward (no_grad) and forward + backward."""
    g = torch.randn(run_torch(module, x).shape)
    results = {}
    grads = []
    for run in (run_xattn, run_torch):
        module.zero_grad()
        xg = x.clone().requires_grad_()
        (run(module, xg) * g).sum().backward()
        grads.append([p.grad.clone() for p in module.parameters()] + [xg.grad])
    with torch.no_grad():
        results["forward_error"] = rel_error(run_xattn(module, x), run_torch(module, x))
    results["grad_error"] = grad_error(*grads)
    for key in ("forward_error", "grad_error"):
        if not results[key] <= TOLERANCE:
            raise SystemExit(f"{name}: xattn and torch disagree, {key} {results[key]:.2e}")

    def forward(run):
        with torch.no_grad():
            run(module, x)

    def step(run):
        xg = x.clone().requires_grad_()
        (run(module, xg) * g).sum().backward()

    for mode, fn in (("forward", forward), ("train", step)):
        for variant, run in (("torch", run_torch), ("xattn", run_xattn)):
            log(f"{name} {mode} {variant}")
            results[f"{mode}_{variant}"] = timed(lambda: fn(run), runs)
        results[f"{mode}_speedup"] = (results[f"{mode}_torch"]["median_ms"] /
                                      results[f"{mode}_xattn"]["median_ms"])
    return results


def bench_ccnet(cfg, runs):
    torch.manual_seed(0)
    module = CrissCrossAttention(cfg["channels"])
    with torch.no_grad():
        module.gamma.fill_(0.7)  # a trained γ; at 0 the attention would not show in the output
    x = torch.randn(cfg["batch"], cfg["channels"], cfg["height"], cfg["width"])
    return compare("ccnet", module, lambda m, x: m(x), official_criss_cross, x, runs)


def bench_lsda(cfg, batches, runs):
    results = []
    for kind in ("sda", "lda"):
        for batch in batches:
            torch.manual_seed(1)
            module = LSDA(cfg["dim"], cfg["num_heads"], cfg["group_size"], cfg["interval"], kind)
            H, W = cfg["height"], cfg["width"]
            x = torch.randn(batch, H * W, cfg["dim"])
            r = compare(f"lsda {kind} batch {batch}", module, lambda m, x: m(x, H, W),
                        lambda m, x: torch_lsda(m, x, H, W), x, runs)
            results.append(dict(kind=kind, batch=batch, **r))
    return results


def rows(label, r):
    return [f"| {label} {mode} | {fmt_time(r[f'{mode}_torch'])} | {fmt_time(r[f'{mode}_xattn'])} "
            f"| {r[f'{mode}_speedup']:.2f}× | {r['forward_error' if mode == 'forward' else 'grad_error']:.1e} |"
            for mode in ("forward", "train")]


def markdown(meta, cc, lsda):
    c, l = meta["ccnet"], meta["lsda"]
    lines = [
        "# xattn's vision attention modules vs their official torch formulations", "",
        f"xattn {meta['xattn']} ({meta['simd_target']}) vs torch {meta['torch']}, "
        f"{meta['threads']} threads ({meta['blas']}), {meta['cpu']}, {meta['date']}; median "
        f"(min..max) of {meta['runs']} timed runs after one warm-up, in ms; \"train\" is forward + "
        f"backward (gradients to every parameter and the input). Whole run {meta['wall_s']:.0f} s.",
        "", f"Command: `{meta['command']}`", "",
        "| case | torch ms | xattn ms | speed-up | max rel. error |", "|---|---|---|---|---|"]
    lines += rows(f"CrissCrossAttention [{c['batch']}, {c['channels']}, {c['height']}, "
                  f"{c['width']}]", cc)
    for r in lsda:
        lines += rows(f"LSDA {r['kind'].upper()} batch {r['batch']}, {l['height']}×{l['width']} "
                      f"width {l['dim']}, {l['num_heads']} heads, G {l['group_size']} "
                      f"I {l['interval']}", r)
    lines += ["", "torch for CrissCrossAttention: the official CCNet formulation (bmm energies, "
              "-inf centre, softmax over the concatenation, bmm outputs); for LSDA: the same "
              "grouping, projections and position bias with math attention in the groups.", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch's and xattn's (default 2)")
    ap.add_argument("--runs", type=int, default=7, help="timed calls after one warm-up")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "compare_torch_vision.md"))
    args = ap.parse_args()
    if args.runs < 1 or args.threads < 1:
        raise SystemExit("--runs and --threads must be at least 1")
    start = time.perf_counter()
    blas = set_torch_threads(args.threads)
    prefix = f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get("PYTHONPATH") else ""
    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(),
            "threads": args.threads, "blas": blas, "torch": torch.__version__,
            "xattn": xattn.version(), "simd_target": xattn.simd_target(), "runs": args.runs,
            "command": prefix + shlex.join([sys.executable] + sys.argv),
            "ccnet": CCNET, "lsda": LSDA_SHAPE}
    cc = bench_ccnet(CCNET, args.runs)
    lsda = bench_lsda(LSDA_SHAPE, LSDA_BATCHES, args.runs)
    meta["wall_s"] = time.perf_counter() - start
    text = markdown(meta, cc, lsda)
    print(text, end="")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"meta": meta, "ccnet": cc, "lsda": lsda}, f, indent=1)
    log(f"wrote {args.out} (and .json) in {meta['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
