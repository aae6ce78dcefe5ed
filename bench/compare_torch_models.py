"""xattn.models against the same modules written in plain torch 1.13, same process and threads:

  crossvit   CrossViTCrossAttention at CrossViT-Base's fusion size (batch 64, 401 tokens = the CLS
             token + 400 patches of the other branch, width 384, 6 heads, qkv_bias=True) against
             timm's CrossAttention (q = wq(x[:, :1]), k = wk(x), v = wv(x), heads,
             softmax((q @ kᵀ) * scale) @ v, proj): forward under torch.no_grad(), and forward +
             backward under autograd (gradients to the parameters and to x).
  perceiver  PerceiverIO.encode (the latents' cross-attention block over the whole input) against
             the same block with torch's math attention (scores [B, H, N, M] materialised,
             softmax, @ v), at several input lengths M: time, and the peak memory of each variant
             measured in its own fresh process; then forward + backward (training, gradients to
             the parameters) at the --train-sizes.

    PYTHONPATH=build/python /usr/bin/python3 bench/compare_torch_models.py --threads 2 --runs 5
    ... --quick                                       # small sizes, a smoke run

Both sides hold the same weights (the torch module load_state_dict's the xattn module's
state_dict, names unchanged). Before timing, outputs (and gradients) are compared: max relative
error = max|xattn - torch| / max|torch|; over 1e-4 the program stops. Times: one warm-up call,
then --runs timed calls; median (min..max) in ms.

Peak memory: each (variant, mode, M) runs in a fresh `--child` process that builds the module,
warms up once on 1024 inputs (code paths, thread pools), allocates the inputs, resets its
peak-RSS counter (writing 5 to /proc/self/clear_refs), runs encode once and reads VmHWM from
/proc/self/status. "+MB" is that peak minus the RSS just before the call (what encode itself
needs), "peak MB" the process's absolute peak (python + torch + weights + inputs included).
ru_maxrss is recorded too (in the JSON) but not reported: on Linux it includes the peak of the
parent that spawned the process. A configuration whose estimated need exceeds --child-gib is
skipped; a child that fails (torch's RuntimeError on allocation) or is killed is reported as such.

Writes --out (markdown, default bench/results/compare_torch_models.md) and the same name with
.json, and prints the markdown.
"""
import argparse
import datetime
import gc
import json
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

import xattn
from compare_torch import cpu_name, set_torch_threads
from xattn.models import CrossViTCrossAttention, PerceiverIO

CROSSVIT = dict(batch=64, tokens=401, dim=384, num_heads=6)  # CrossViT-Base, large branch
CROSSVIT_QUICK = dict(batch=8, tokens=197, dim=384, num_heads=6)
PERCEIVER = dict(batch=1, input_dim=64, num_latents=256, latent_dim=256, num_cross_heads=1)
SIZES, TRAIN_SIZES = [2**13, 2**15, 2**17], [2**15, 2**17]
SIZES_QUICK, TRAIN_SIZES_QUICK = [2**10, 2**11, 2**12], [2**12]
TOLERANCE = 1e-4  # max relative error; the expected level is ~1e-6
WARMUP_INPUTS = 1024
MB = 2.0**20


# ---------------------------------------------------------------------------------------------
# The plain-torch modules, parameter names as in xattn.models.


class TimmCrossAttention(nn.Module):
    """timm.models.crossvit.CrossAttention (dropouts 0)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x):
        B, N, C = x.shape
        h = self.num_heads
        q = self.wq(x[:, 0:1, ...]).reshape(B, 1, h, C // h).permute(0, 2, 1, 3)
        k = self.wk(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        v = self.wv(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B, 1, C)
        return self.proj_drop(self.proj(x))


def split_heads(x, h):
    b, n, c = x.shape
    return x.view(b, n, h, c // h).transpose(1, 2)


class TorchCrossAttention(nn.Module):
    """xattn.models' CrossAttention with torch's math attention."""

    def __init__(self, q_dim, kv_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(q_dim, q_dim)
        self.k_proj = nn.Linear(kv_dim, q_dim)
        self.v_proj = nn.Linear(kv_dim, q_dim)
        self.out_proj = nn.Linear(q_dim, q_dim)

    def forward(self, x, context):
        h = self.num_heads
        q, k, v = (split_heads(p(t), h) for p, t in ((self.q_proj, x), (self.k_proj, context),
                                                      (self.v_proj, context)))
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # [B, H, N, M]
        out = scores.softmax(dim=-1) @ v
        b, _, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class TorchMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TorchCrossAttentionBlock(nn.Module):
    def __init__(self, q_dim, kv_dim, num_heads, mlp_ratio=4.0, eps=1e-5):
        super().__init__()
        self.norm_q = nn.LayerNorm(q_dim, eps=eps)
        self.norm_kv = nn.LayerNorm(kv_dim, eps=eps)
        self.attn = TorchCrossAttention(q_dim, kv_dim, num_heads)
        self.norm2 = nn.LayerNorm(q_dim, eps=eps)
        self.mlp = TorchMlp(q_dim, int(q_dim * mlp_ratio))

    def forward(self, x, context):
        x = x + self.attn(self.norm_q(x), self.norm_kv(context))
        return x + self.mlp(self.norm2(x))


class TorchPerceiverEncoder(nn.Module):
    """PerceiverIO's latents and encoder, with encode()."""

    def __init__(self, input_dim, num_latents, latent_dim, num_cross_heads=1, mlp_ratio=4.0):
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(num_latents, latent_dim))
        self.encoder = TorchCrossAttentionBlock(latent_dim, input_dim, num_cross_heads, mlp_ratio)

    def encode(self, inputs):
        return self.encoder(self.latents.unsqueeze(0).expand(inputs.shape[0], -1, -1), inputs)


# ---------------------------------------------------------------------------------------------
# Helpers.


def timed(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def rel_error(got, want):
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def check(name, err):
    if not err <= TOLERANCE:
        raise SystemExit(f"{name}: xattn and torch disagree, max relative error {err:.2e} > "
                         f"{TOLERANCE:.0e}")
    return err


def grads_of(module, names, extra=()):
    """{name: grad} for the named parameters (None -> zeros) and the extra (name, tensor) pairs."""
    params = dict(module.named_parameters())
    out = {n: params[n].grad if params[n].grad is not None else torch.zeros_like(params[n])
           for n in names}
    out.update({n: t.grad for n, t in extra})
    return out


def grad_error(got, want, zero_grad_names):
    """Max relative error over the gradients; the names in zero_grad_names have a gradient that is
    0 mathematically (a key bias shifts every score of a query alike and cancels in the softmax),
    so they are only checked to be negligible against the largest gradient."""
    scale = max(w.abs().max().item() for w in want.values())
    worst = 0.0
    for name in want:
        if name in zero_grad_names:
            small = max(got[name].abs().max().item(), want[name].abs().max().item())
            if small > TOLERANCE * scale:
                raise SystemExit(f"{name}: gradient should vanish, got {small:.2e} "
                                 f"(largest gradient {scale:.2e})")
            continue
        worst = max(worst, rel_error(got[name], want[name]))
    return worst


def fmt_time(s):
    return f"{s['median_ms']:.1f} ({s['min_ms']:.1f}..{s['max_ms']:.1f})" if s else "n/a"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# CrossViT.


def bench_crossvit(cfg, runs):
    torch.manual_seed(0)
    ours = CrossViTCrossAttention(cfg["dim"], cfg["num_heads"], qkv_bias=True)
    ref = TimmCrossAttention(cfg["dim"], cfg["num_heads"], qkv_bias=True)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(cfg["batch"], cfg["tokens"], cfg["dim"])
    dout = torch.randn(cfg["batch"], 1, cfg["dim"])
    names = [n for n, _ in ours.named_parameters()]

    def step(module):
        module.zero_grad(set_to_none=True)
        leaf = x.detach().requires_grad_()
        module(leaf).backward(dout)
        return grads_of(module, names, [("x", leaf)])

    with torch.no_grad():
        fwd_err = check("crossvit forward", rel_error(ours(x), ref(x)))
        forward = {"torch": timed(lambda: ref(x), runs), "xattn": timed(lambda: ours(x), runs)}
    train_err = check("crossvit gradients", grad_error(step(ours), step(ref), {"wk.bias"}))
    train = {"torch": timed(lambda: step(ref), runs), "xattn": timed(lambda: step(ours), runs)}
    forward["error"], train["error"] = fwd_err, train_err
    return {"forward": forward, "train": train}


# ---------------------------------------------------------------------------------------------
# Perceiver IO: modules, memory estimate, child process.


def build_perceiver(cfg):
    """(xattn PerceiverIO, torch encoder holding the same latents and encoder weights)."""
    torch.manual_seed(0)
    model = PerceiverIO(cfg["input_dim"], cfg["num_latents"], cfg["latent_dim"],
                        num_cross_heads=cfg["num_cross_heads"], num_self_layers=0)
    ref = TorchPerceiverEncoder(cfg["input_dim"], cfg["num_latents"], cfg["latent_dim"],
                                cfg["num_cross_heads"])
    ref.load_state_dict({k: v for k, v in model.state_dict().items()
                         if k == "latents" or k.startswith("encoder.")})
    return model, ref


def encode_names(model):
    return [n for n, _ in model.named_parameters() if n == "latents" or n.startswith("encoder.")]


def estimate_bytes(variant, mode, m, cfg):
    """A generous estimate of what one encode (mode "forward" or "train") allocates, + 0.5 GiB
    for python, torch and the weights: inputs and their LayerNorm, K and V (and their gradients),
    and for torch the [B, H, N, M] scores, of which forward holds two at once (q·kᵀ and its
    scaled copy, then that and the softmax) and backward three (saved softmax, its gradient and
    the scores' gradient)."""
    b, f = cfg["batch"], 4
    inputs = b * m * cfg["input_dim"] * f
    kv = b * m * cfg["latent_dim"] * f
    scores = b * cfg["num_cross_heads"] * cfg["num_latents"] * m * f
    if mode == "forward":
        need = 2 * inputs + 3 * kv + (2 * scores if variant == "torch" else 0)
    else:
        need = 3 * inputs + 5 * kv + (3 * scores if variant == "torch" else 0)
    return need + 2**29


def memory_status():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    kb = lambda key: int(fields[key].split()[0])  # noqa: E731
    return {"rss_mb": kb("VmRSS") / 1024, "hwm_mb": kb("VmHWM") / 1024,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(spec):
    """Runs one encode of spec's variant and mode at spec's M; prints a JSON line."""
    set_torch_threads(spec["threads"])
    cfg, m, mode = spec["cfg"], spec["inputs"], spec["mode"]
    model, ref = build_perceiver(cfg)
    if spec["variant"] == "torch":
        module, encode = ref, ref.encode
        del model
    else:
        module, encode = model, model.encode
        del ref

    def run(inputs, dout):
        if mode == "forward":
            with torch.no_grad():
                return encode(inputs)
        module.zero_grad(set_to_none=True)
        encode(inputs).backward(dout)
        return None

    g = torch.Generator().manual_seed(1)
    dout = torch.randn(cfg["batch"], cfg["num_latents"], cfg["latent_dim"], generator=g)
    run(torch.randn(cfg["batch"], min(WARMUP_INPUTS, m), cfg["input_dim"], generator=g), dout)
    module.zero_grad(set_to_none=True)
    inputs = torch.randn(cfg["batch"], m, cfg["input_dim"], generator=g)
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS now
        reset = True
    except OSError:
        reset = False
    before = memory_status()
    result = {"ok": True, "hwm_reset": reset, "before": before}
    t0 = time.perf_counter()
    try:
        run(inputs, dout)
    except RuntimeError as e:  # torch's allocator: "can't allocate memory"
        result = {"ok": False, "error": f"RuntimeError: {str(e).splitlines()[0][:200]}"}
    result["seconds"] = time.perf_counter() - t0
    after = memory_status()
    result["after"] = after
    if result["ok"]:
        base = before["rss_mb"] if reset else before["hwm_mb"]
        result["increase_mb"] = after["hwm_mb"] - base
        result["peak_mb"] = after["hwm_mb"]
    print(json.dumps(result))


def peak_memory(variant, mode, m, cfg, threads, budget_gib):
    est = estimate_bytes(variant, mode, m, cfg)
    if est > budget_gib * 2**30:
        return {"ok": False, "estimate_gib": est / 2**30,
                "error": f"skipped: needs ~{est / 2**30:.1f} GiB > {budget_gib:g} GiB"}
    spec = dict(variant=variant, mode=mode, inputs=m, cfg=cfg, threads=threads)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        why = " (out of memory?)" if proc.returncode == -signal.SIGKILL else ""
        return {"ok": False, "error": f"child killed by {sig}{why}"}
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return {"ok": False, "error": f"child exited {proc.returncode}: {tail}"}
    result["estimate_gib"] = est / 2**30
    return result


def bench_perceiver(cfg, sizes, train_sizes, runs, threads, budget_gib):
    model, ref = build_perceiver(cfg)
    names = encode_names(model)
    zero = {"encoder.attn.k_proj.bias"}
    rows = {"forward": [], "train": []}
    for mode, lengths in (("forward", sizes), ("train", train_sizes)):
        for m in lengths:
            log(f"perceiver {mode} M = {m}: memory children")
            mem = {v: peak_memory(v, mode, m, cfg, threads, budget_gib) for v in ("torch", "xattn")}
            row = {"inputs": m, "memory": mem, "time": {}, "error": None, "notes": []}
            for v in ("torch", "xattn"):
                if not mem[v]["ok"]:
                    row["notes"].append(f"{v} at M = {m}: {mem[v]['error']}")
            g = torch.Generator().manual_seed(1)
            inputs = torch.randn(cfg["batch"], m, cfg["input_dim"], generator=g)
            dout = torch.randn(cfg["batch"], cfg["num_latents"], cfg["latent_dim"], generator=g)

            def forward(module):
                with torch.no_grad():
                    return module.encode(inputs)

            def step(module):
                module.zero_grad(set_to_none=True)
                module.encode(inputs).backward(dout)
                return grads_of(module, names)

            fn = forward if mode == "forward" else step
            log(f"perceiver {mode} M = {m}: timing")
            for variant, module in (("torch", ref), ("xattn", model)):
                if not mem[variant]["ok"]:
                    row["time"][variant] = None
                    continue
                try:
                    row["time"][variant] = timed(lambda: fn(module), runs)
                except RuntimeError as e:  # out of memory in this (bigger) process
                    row["time"][variant] = None
                    row["notes"].append(f"{variant} at M = {m}: timing failed, RuntimeError: "
                                        f"{str(e).splitlines()[0][:200]}")
            if row["time"]["torch"] and row["time"]["xattn"]:
                if mode == "forward":
                    row["error"] = check(f"perceiver encode M={m}",
                                         rel_error(forward(model), forward(ref)))
                else:
                    row["error"] = check(f"perceiver gradients M={m}",
                                         grad_error(step(model), step(ref), zero))
            rows[mode].append(row)
            gc.collect()
    return rows


# ---------------------------------------------------------------------------------------------
# Report.


def markdown(meta, cv, pc):
    c, p = meta["crossvit"], meta["perceiver"]
    lines = [
        "# xattn.models vs the same modules in plain torch", "",
        f"xattn {meta['xattn']} ({meta['simd_target']}) vs torch {meta['torch']}, "
        f"{meta['threads']} threads (torch.set_num_threads, {meta['blas']}; xattn follows torch: "
        f"default_num_threads() = {meta['xattn_threads']}), {meta['cpu']}, {meta['date']}; "
        f"median (min..max) of {meta['runs']} timed runs after one warm-up, in ms. "
        f"Whole run {meta['wall_s']:.0f} s.", "",
        f"Command: `{meta['command']}`", "",
        f"## CrossViTCrossAttention (batch {c['batch']}, {c['tokens']} tokens, width {c['dim']}, "
        f"{c['num_heads']} heads, qkv_bias=True)", "",
        "torch: timm's CrossAttention on the same weights. xattn reassociates the projections "
        "(q·Wk over the raw tokens, Wv applied to the H mixed rows), so it never projects the "
        f"{c['tokens']} tokens; most of the speed-up is that, not the kernel.", "",
        "| case | torch (timm) ms | xattn ms | speed-up | max rel. error |",
        "|---|---|---|---|---|"]
    for key, label in (("forward", "forward, no_grad"),
                       ("train", "forward + backward (grads to params and x)")):
        r = cv[key]
        lines.append(f"| {label} | {fmt_time(r['torch'])} | {fmt_time(r['xattn'])} | "
                     f"{r['torch']['median_ms'] / r['xattn']['median_ms']:.2f}× | "
                     f"{r['error']:.1e} |")
    lines += [
        "", f"## PerceiverIO.encode (batch {p['batch']}, input_dim {p['input_dim']}, "
        f"num_latents {p['num_latents']}, latent_dim {p['latent_dim']}, num_cross_heads "
        f"{p['num_cross_heads']}, mlp_ratio 4)", "",
        "torch: the same cross-attention block (LayerNorms, q/k/v/out projections, MLP) with "
        "math attention, the scores [B, H, N, M] materialised. Memory: each variant in its own "
        "fresh process; +MB = the peak RSS during the one call minus the RSS just before it, "
        "peak MB = the process's absolute peak RSS (python, torch, weights and inputs "
        "included).", ""]
    for mode, title in (("forward", "Forward (inference, torch.no_grad)"),
                        ("train", "Forward + backward (training, gradients to the parameters)")):
        if not pc[mode]:
            continue
        lines += [f"### {title}", "",
                  "| inputs M | torch ms | xattn ms | speed-up | torch +MB | xattn +MB | "
                  "torch peak MB | xattn peak MB | max rel. error |",
                  "|---|---|---|---|---|---|---|---|---|"]
        notes = []
        for row in pc[mode]:
            t, mem = row["time"], row["memory"]
            notes += row["notes"]
            speed = (f"{t['torch']['median_ms'] / t['xattn']['median_ms']:.2f}×"
                     if t["torch"] and t["xattn"] else "–")
            inc = [f"{mem[v]['increase_mb']:.0f}" if mem[v]["ok"] else "n/a (see below)"
                   for v in ("torch", "xattn")]
            peak = [f"{mem[v]['peak_mb']:.0f}" if mem[v]["ok"] else "n/a"
                    for v in ("torch", "xattn")]
            err = f"{row['error']:.1e}" if row["error"] is not None else "–"
            cells = [f"2^{row['inputs'].bit_length() - 1} = {row['inputs']}",
                     fmt_time(t["torch"]), fmt_time(t["xattn"]), speed, *inc, *peak, err]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    return "\n".join(lines).rstrip() + "\n"


def command_line():
    prefix = f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get("PYTHONPATH") else ""
    return prefix + shlex.join([sys.executable] + sys.argv)


def log2_list(text):
    return [2 ** int(x) for x in text.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch's and xattn's (default 2)")
    ap.add_argument("--runs", type=int, default=5, help="timed calls after one warm-up")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--sizes", type=log2_list, help="log2 of the encode input lengths "
                    "(default 13,15,17; quick 10,11,12)")
    ap.add_argument("--train-sizes", type=log2_list, help="log2 of the training input lengths "
                    "(default 15,17; quick 12)")
    ap.add_argument("--child-gib", type=float, default=12.0,
                    help="skip a memory child whose estimated need is larger (default 12)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "compare_torch_models.md"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.runs < 1 or args.threads < 1:
        raise SystemExit("--runs and --threads must be at least 1")
    start = time.perf_counter()
    blas = set_torch_threads(args.threads)
    crossvit = CROSSVIT_QUICK if args.quick else CROSSVIT
    sizes = args.sizes or (SIZES_QUICK if args.quick else SIZES)
    train_sizes = args.train_sizes if args.train_sizes is not None else (
        TRAIN_SIZES_QUICK if args.quick else TRAIN_SIZES)
    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(),
            "threads": args.threads, "xattn_threads": xattn.default_num_threads(),
            "blas": blas, "torch": torch.__version__, "xattn": xattn.version(),
            "simd_target": xattn.simd_target(), "runs": args.runs, "command": command_line(),
            "crossvit": crossvit, "perceiver": PERCEIVER}
    log("crossvit")
    cv = bench_crossvit(crossvit, args.runs)
    pc = bench_perceiver(PERCEIVER, sizes, train_sizes, args.runs, args.threads, args.child_gib)
    meta["wall_s"] = time.perf_counter() - start
    text = markdown(meta, cv, pc)
    print(text, end="")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"meta": meta, "crossvit": cv, "perceiver": pc}, f, indent=1)
    log(f"wrote {args.out} (and .json) in {meta['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
