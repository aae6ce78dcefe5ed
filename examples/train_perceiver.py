"""Trains a small Perceiver IO (xattn.models.PerceiverIO, every attention through xattn's fused
forward and backward) to read a random smooth signal off a long, ragged set of noisy samples and
predict its value at new positions, then runs the same checkpoint in C++ through `xattn model`.

Each batch row is one random periodic signal f(x) = sum_k a_k sin(2πkx) + b_k cos(2πkx)
(k = 1..3, variance 1) sampled at M random points x in [0, 1), M drawn per row up to --max-len:
each input element is [f(x) + noise, Fourier features of x]. The rows are padded to the longest
with large junk, and their true lengths are passed as input_lens (training, evaluation and C++),
so the padding has no effect. The output queries are the Fourier features of other positions;
the target is f there, which only reading the row's inputs reveals.

    PYTHONPATH=build/python /usr/bin/python3 examples/train_perceiver.py [--steps 250]

Exits with status 1 if the held-out mean squared error is not below --max-ratio times that of
predicting the mean, if the padded batch differs from its rows run alone, or if the C++ outputs
differ from the Python module's by more than 1e-5 of their largest value.
"""
import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from xattn.models import PerceiverIO, load_checkpoint, save_checkpoint

FREQS, HARMONICS, NOISE = 8, 3, 0.1  # position-encoding frequencies, signal harmonics, noise


def fourier(x):
    """Positions [...] in [0, 1) -> [..., 2 * FREQS] features sin, cos(2π j x), j = 1..FREQS."""
    angles = 2 * np.pi * x[..., None] * np.arange(1, FREQS + 1)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)


def batch(rng, rows, min_len, max_len, num_queries):
    """Padded inputs [rows, max M, 1 + 2F], their lengths (ints), queries [rows, O, 2F] and
    targets [rows, O, 1]."""
    coef = rng.normal(size=(rows, 2, HARMONICS)) / np.sqrt(HARMONICS)
    k = np.arange(1, HARMONICS + 1)

    def signal(x):  # x [rows, n] -> f(x) of each row
        angles = 2 * np.pi * x[..., None] * k
        return (coef[:, None, 0] * np.sin(angles) + coef[:, None, 1] * np.cos(angles)).sum(-1)

    lens = rng.integers(min_len, max_len + 1, size=rows)
    x = rng.random((rows, lens.max()))
    values = signal(x) + NOISE * rng.normal(size=x.shape)
    inputs = np.concatenate([values[..., None], fourier(x)], axis=-1)
    pad = np.arange(lens.max()) >= lens[:, None]
    inputs[pad] = 1e4 * rng.standard_cauchy(size=(pad.sum(), inputs.shape[2]))  # junk
    q = rng.random((rows, num_queries))
    to = lambda a: torch.from_numpy(a.astype(np.float32))
    return to(inputs), lens.tolist(), to(fourier(q)), to(signal(q)[..., None])


def run_cli(binary, ckpt, out_dir, inputs, queries, lens, threads):
    """Runs the checkpoint in C++ on the same arrays; returns its outputs and the command."""
    paths = {name: out_dir / f"{name}.npy" for name in ("inputs", "queries", "outputs")}
    np.save(paths["inputs"], inputs.numpy())
    np.save(paths["queries"], queries.numpy())
    cmd = [str(binary), "model", str(ckpt), "--in", f"inputs={paths['inputs']}",
           "--in", f"queries={paths['queries']}", "--input-lens", ",".join(map(str, lens)),
           "-o", f"outputs={paths['outputs']}", "--threads", str(threads)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return torch.from_numpy(np.load(paths["outputs"])), cmd


def main():
    default_bin = os.environ.get("XATTN_BIN") or Path(__file__).resolve().parents[1] / "build/xattn"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-len", type=int, default=128)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--max-ratio", type=float, default=0.25,
                    help="largest allowed held-out MSE over the predict-the-mean baseline's")
    ap.add_argument("--out", type=Path, help="where the checkpoint and .npy files go (default: a "
                    "temporary directory)")
    ap.add_argument("--xattn-bin", type=Path, default=default_bin,
                    help="the xattn CLI (default: $XATTN_BIN, else build/xattn)")
    args = ap.parse_args()
    if not args.xattn_bin.is_file():
        raise SystemExit(f"{args.xattn_bin}: no xattn binary there (build it, or pass --xattn-bin)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_rng, eval_rng = (np.random.default_rng([args.seed, i]) for i in range(2))
    sample = lambda rng, rows: batch(rng, rows, args.min_len, args.max_len, args.queries)

    model = PerceiverIO(input_dim=1 + 2 * FREQS, num_latents=32, latent_dim=64,
                        num_cross_heads=1, num_latent_heads=4, num_self_layers=1,
                        query_dim=2 * FREQS, output_dim=1, mlp_ratio=2.0)
    # Latents drawn N(0, 1) rather than at their init's 0.02 stay distinct through the encoder's
    # residual, which shortens the plateau before they specialise to positions (seed-dependent).
    torch.nn.init.normal_(model.latents)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    warmup = max(1, args.steps // 10)  # then a cosine decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warmup) * 0.5 * (
        1 + np.cos(np.pi * min(s, args.steps) / args.steps)))
    print(f"Perceiver IO: {sum(p.numel() for p in model.parameters())} parameters; rows of "
          f"{args.min_len}..{args.max_len} points, {args.queries} queries, batch {args.batch}")
    t0, target_sum, target_count = time.perf_counter(), 0.0, 0
    for step in range(1, args.steps + 1):
        inputs, lens, queries, targets = sample(train_rng, args.batch)
        loss = torch.nn.functional.mse_loss(model(inputs, queries, input_lens=lens), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        target_sum, target_count = target_sum + targets.sum().item(), target_count + targets.numel()
        if step % args.log_every == 0 or step == 1:
            print(f"step {step:>5}  loss {loss.item():.4f}")
    train_time = time.perf_counter() - t0

    model.eval()
    mean = target_sum / target_count  # the trivial baseline: always predict the training mean
    mse = base = 0.0
    evals = [sample(eval_rng, args.batch) for _ in range(4)]
    with torch.no_grad():
        for inputs, lens, queries, targets in evals:
            mse += torch.nn.functional.mse_loss(model(inputs, queries, lens), targets).item()
            base += ((targets - mean) ** 2).mean().item()
        inputs, lens, queries, _ = evals[0]
        py_out = model(inputs, queries, lens)
        alone = torch.cat([model(inputs[b:b + 1, :n], queries[b:b + 1])  # each row unpadded
                           for b, n in enumerate(lens)])
    mse, base = mse / len(evals), base / len(evals)
    pad_diff = (alone - py_out).abs().max().item()

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="train_perceiver_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "perceiver.safetensors"
    save_checkpoint(model, ckpt)
    with torch.no_grad():  # the checkpoint as the C++ side sees it, reloaded
        py_out = load_checkpoint(ckpt)(inputs, queries, lens)
    cpp_out, cmd = run_cli(args.xattn_bin, ckpt, out_dir, inputs, queries, lens, args.threads)
    scale = py_out.abs().max().item()
    cpp_diff = (cpp_out - py_out).abs().max().item()

    print(f"trained {args.steps} steps in {train_time:.1f} s")
    print(f"held-out MSE {mse:.4f} vs {base:.4f} predicting the mean (ratio {mse / base:.3f}, "
          f"limit {args.max_ratio})")
    print(f"padded batch vs rows alone: max abs diff {pad_diff:.2e}")
    print(f"C++ vs Python: max abs diff {cpp_diff:.2e} (largest output {scale:.3f})")
    print("C++ command:", " ".join(cmd))
    failures = [msg for bad, msg in (
        (not mse < args.max_ratio * base, "did not learn (held-out MSE too close to baseline)"),
        (not pad_diff <= 1e-5 * scale, "padding changed the outputs"),
        (not cpp_diff <= 1e-5 * scale, "C++ and Python outputs differ")) if bad]
    if failures:
        print("FAILED: " + "; ".join(failures))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
