"""Trains a small CrossViT (xattn.models.CrossViT, every attention through xattn's fused forward
and backward) to classify synthetic images of shapes, then runs the same checkpoint in C++
through `xattn model` and checks that it computes the same logits.

Each 36x36 grayscale image holds one shape of a random size and position on a random background
with Gaussian noise; the four classes are a filled disk, a ring, a horizontal bar and a
vertical bar. The two branches see the image at 36x36 in 6-pixel patches and, resized, at
32x32 in 8-pixel patches; two multi-scale encoders exchange information between them with the
chosen fusion scheme (--fusion; the paper's "cross_attention" by default).

    PYTHONPATH=build/python /usr/bin/python3 examples/train_crossvit.py [--fusion pairwise]

Exits with status 1 if the held-out accuracy is below --min-accuracy (chance is 0.25), or if the
C++ logits differ from the Python module's by more than 1e-5 of their largest value.
"""
import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from xattn.models import CrossViT, load_checkpoint, save_checkpoint

SIZE = 36
CLASSES = ("disk", "ring", "horizontal bar", "vertical bar")
SCHEMES = ("cross_attention", "all_attention", "class_token", "pairwise")


def images(rng, n):
    """n noisy images [n, 1, SIZE, SIZE] and their labels [n]."""
    labels = rng.integers(len(CLASSES), size=n)
    r = rng.uniform(5, 11, size=(n, 1, 1))  # the shape's radius and centre, in pixels
    cy, cx = (rng.uniform(r[:, 0, 0] + 1, SIZE - 1 - r[:, 0, 0])[:, None, None] for _ in range(2))
    y, x = np.mgrid[:SIZE, :SIZE] + 0.5
    dy, dx = y - cy, x - cx
    inside = lambda depth: np.clip(depth + 0.5, 0, 1)  # signed depth inside an edge -> coverage
    dist = np.hypot(dy, dx)
    width = 0.3 * r  # of the ring and the bars
    bar = lambda across, along: inside(np.minimum(width / 2 - np.abs(across), r - np.abs(along)))
    shapes = [inside(r - dist), inside(width / 2 - np.abs(dist - r + width / 2)),
              bar(dy, dx), bar(dx, dy)]
    shape = np.choose(labels[:, None, None], shapes)
    contrast = rng.uniform(0.6, 1.4, size=(n, 1, 1))
    background = rng.uniform(-0.5, 0.5, size=(n, 1, 1))
    pixels = background + contrast * shape + 0.3 * rng.normal(size=shape.shape)
    return torch.from_numpy(pixels[:, None].astype(np.float32)), torch.from_numpy(labels)


def run_cli(binary, ckpt, out_dir, x, threads):
    """Runs the checkpoint in C++ on the same images; returns its logits and the command."""
    x_path, out_path = out_dir / "images.npy", out_dir / "logits.npy"
    np.save(x_path, x.numpy())
    cmd = [str(binary), "model", str(ckpt), "--in", f"images={x_path}",
           "-o", f"logits={out_path}", "--threads", str(threads)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return torch.from_numpy(np.load(out_path)), cmd


def main():
    default_bin = os.environ.get("XATTN_BIN") or Path(__file__).resolve().parents[1] / "build/xattn"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--fusion", choices=SCHEMES, default="cross_attention")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-images", type=int, default=512)
    ap.add_argument("--min-accuracy", type=float, default=0.6)
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

    model = CrossViT(img_size=(SIZE, 32), patch_size=(6, 8), in_chans=1,
                     num_classes=len(CLASSES), embed_dim=(32, 64), depth=((1, 1), (1, 1)),
                     num_heads=(2, 4), mlp_ratio=(2.0, 2.0), fusion=args.fusion)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    warmup = max(1, args.steps // 10)  # then a cosine decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warmup) * 0.5 * (
        1 + np.cos(np.pi * min(s, args.steps) / args.steps)))
    print(f"CrossViT ({args.fusion} fusion): {sum(p.numel() for p in model.parameters())} "
          f"parameters; classes {', '.join(CLASSES)}; batch {args.batch}")
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, labels = images(train_rng, args.batch)
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % args.log_every == 0 or step == 1:
            print(f"step {step:>5}  loss {loss.item():.4f}")
    train_time = time.perf_counter() - t0

    model.eval()
    x, labels = images(eval_rng, args.eval_images)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == labels).float().mean().item()

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="train_crossvit_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "crossvit.safetensors"
    save_checkpoint(model, ckpt)
    x = x[:64]
    with torch.no_grad():  # the checkpoint as the C++ side sees it, reloaded
        py_logits = load_checkpoint(ckpt)(x)
    cpp_logits, cmd = run_cli(args.xattn_bin, ckpt, out_dir, x, args.threads)
    scale = py_logits.abs().max().item()
    cpp_diff = (cpp_logits - py_logits).abs().max().item()

    print(f"trained {args.steps} steps in {train_time:.1f} s")
    print(f"held-out accuracy {accuracy:.3f} on {args.eval_images} images (chance "
          f"{1 / len(CLASSES):.2f}, limit {args.min_accuracy})")
    print(f"C++ vs Python: max abs diff {cpp_diff:.2e} (largest logit {scale:.3f})")
    print("C++ command:", " ".join(cmd))
    failures = [msg for bad, msg in (
        (not accuracy >= args.min_accuracy, "did not learn (accuracy too close to chance)"),
        (not cpp_diff <= 1e-5 * scale, "C++ and Python logits differ")) if bad]
    if failures:
        print("FAILED: " + "; ".join(failures))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
