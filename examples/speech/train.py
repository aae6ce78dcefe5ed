"""Trains the speech recogniser (xattn.models.SpeechRecognizer) on utterances made here
(data.py: espeak-ng voices, speeds, pitches and noise), every attention through xattn's fused
forward and backward, then measures the character error rate on the held-out set (voices and
word sequences training never met) and saves the checkpoint the C++ transcriber loads.

    PYTHONPATH=build/python /usr/bin/python3 examples/speech/train.py \\
        --out examples/speech/model.safetensors          # about 20 minutes on 2 cores

The data is made once and kept in --data (about 2 minutes to make).
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import xattn
from xattn.models import SpeechRecognizer, save_checkpoint
from xattn.models.speech import EOT, SOT, decode_tokens, encode_text

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402  (examples/speech/data.py)


def batches(items, batch, rng):
    """Index lists of about `batch` utterances of similar length, in random order."""
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + rng.random())
    chunks = [order[i:i + batch] for i in range(0, len(order), batch)]
    rng.shuffle(chunks)
    return chunks


def collate(items, idx, augment=None):
    """Padded features [B, T, 80], their lengths, decoder inputs and targets (-100 = ignore)."""
    feats = [items[i][0] for i in idx]
    tokens = [[SOT] + encode_text(items[i][1]) + [EOT] for i in idx]
    T, L = max(len(f) for f in feats), max(len(t) for t in tokens) - 1
    x = np.zeros((len(idx), T, feats[0].shape[1]), np.float32)
    for b, f in enumerate(feats):
        x[b, :len(f)] = augment(f) if augment else f
    inputs = torch.full((len(idx), L), EOT, dtype=torch.long)
    targets = torch.full((len(idx), L), -100, dtype=torch.long)
    for b, t in enumerate(tokens):
        inputs[b, :len(t) - 1] = torch.tensor(t[:-1])
        targets[b, :len(t) - 1] = torch.tensor(t[1:])
    return torch.from_numpy(x), [len(f) for f in feats], inputs, targets


def spec_augment(rng):
    """Masks a random band of up to 10 mel bins and a stretch of up to 12 frames with the
    utterance's mean (SpecAugment, lite): robustness to voices not heard in training."""
    def apply(f):
        f = f.copy()
        m = f.mean()
        b0, nb = rng.integers(0, f.shape[1] - 10), rng.integers(0, 11)
        f[:, b0:b0 + nb] = m
        t0, nt = rng.integers(0, max(1, len(f) - 12)), rng.integers(0, 13)
        f[t0:t0 + nt] = m
        return f
    return apply


@torch.no_grad()
def greedy(model, items, batch=64, max_tokens=60):
    """Texts of all items, decoded greedily in batches (each step re-runs the decoder on the
    whole prefix)."""
    model.eval()
    texts = []
    for i in range(0, len(items), batch):
        chunk = list(range(i, min(len(items), i + batch)))
        x, lens, _, _ = collate(items, chunk)
        audio, audio_lens = model.encode(x, lens)
        tokens = torch.full((len(chunk), 1), SOT, dtype=torch.long)
        done = torch.zeros(len(chunk), dtype=torch.bool)
        for _ in range(max_tokens):
            nxt = model.decode(tokens, audio, audio_lens)[:, -1].argmax(-1)
            nxt[done] = EOT
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            done |= nxt == EOT
            if done.all():
                break
        texts += [decode_tokens(t[1:].tolist()) for t in tokens]
    model.train()
    return texts


def edit_distance(a, b):
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def character_error_rate(hypotheses, references):
    """Σ edit distance / Σ reference length."""
    return (sum(edit_distance(h, r) for h, r in zip(hypotheses, references)) /
            max(1, sum(len(r) for r in references)))


def progress(step, steps, loss, start):
    elapsed = time.perf_counter() - start
    done = step / steps
    bar = "#" * int(30 * done) + "." * (30 - int(30 * done))
    eta = elapsed / max(done, 1e-9) - elapsed
    print(f"\r[{bar}] step {step}/{steps} loss {loss:.3f} {elapsed / 60:.1f} min, "
          f"{eta / 60:.1f} min left", end="", flush=True)


def use_avx512_blas():
    """Re-runs this script with OPENBLAS_CORETYPE=SkylakeX when the OpenBLAS torch uses fell
    back to its SSE3 kernels ("Prescott") on a CPU with AVX-512 (an OpenBLAS older than the
    CPU): its matrix products, most of a training step, then run about twice as fast. The
    variable is read only when the library loads, hence the new process."""
    if os.environ.get("OPENBLAS_CORETYPE") or "avx512f" not in open("/proc/cpuinfo").read():
        return
    if xattn.blas_kernels() == "Prescott":
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
        os.execv(sys.executable, [sys.executable] + sys.argv)


def main():
    use_avx512_blas()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="build/speech-data")
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="build/speech-model.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    paths = data.build(args.data, args.train, args.test, seed=args.seed,
                       progress=lambda m: print("data: " + m, flush=True))
    train_items, test_items = data.load(paths["train"]), data.load(paths["test"])
    print(f"data: {len(train_items)} training and {len(test_items)} held-out utterances "
          f"({time.perf_counter() - t0:.0f} s)")

    model = SpeechRecognizer()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = min(300, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / args.steps))))
    augment = spec_augment(rng)
    start, step, avg = time.perf_counter(), 0, None
    while step < args.steps:
        for idx in batches(train_items, args.batch, rng):
            x, lens, inputs, targets = collate(train_items, idx, augment)
            logits = model(x, inputs, lens)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            schedule.step()
            step += 1
            avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
            if step % 10 == 0 or step == args.steps:
                progress(step, args.steps, avg, start)
            if step == args.steps:
                break
    print(f"\ntrained {step} steps in {(time.perf_counter() - start) / 60:.1f} min")

    hyps = greedy(model, test_items)
    refs = [t for _, t in test_items]
    cer = character_error_rate(hyps, refs)
    print(f"held-out character error rate: {100 * cer:.2f}% over {len(refs)} utterances "
          f"({sum(map(len, refs))} characters; voices and word sequences unseen in training)")
    for h, r in list(zip(hyps, refs))[:5]:
        print(f"  said: {r!r}\n  heard: {h!r}")
    save_checkpoint(model.eval(), args.out, dtype=torch.float16)  # a few MB, to ship
    print(f"saved {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
