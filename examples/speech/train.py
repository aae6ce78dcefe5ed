"""Trains the speech recogniser (xattn.models.SpeechRecognizer) on utterances made here
(data.py: espeak-ng voices, speeds, pitches and noise), every attention through xattn's fused
forward and backward, then measures the character error rate on the held-out set (voices and
word sequences training never met) and saves the checkpoint the C++ transcriber loads.

    PYTHONPATH=build/python /usr/bin/python3 examples/speech/train.py \\
        --out examples/speech/model.safetensors          # about 20 minutes on 2 cores

The data is made once and kept in --data (about 4 minutes to make).
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
from xattn.models.speech import EOT, SOT, encode_text

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402  (examples/speech/data.py)
from evaluate import report  # noqa: E402


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
    """Masks a random band of up to 10 mel bins and a stretch of up to 5 frames with the
    utterance's mean (SpecAugment, lite): robustness to voices not heard in training. The
    stretch stays shorter than any word: the words are in random order, so a word masked whole
    could only be guessed, which teaches the decoder to invent words."""
    def apply(f):
        f = f.copy()
        m = f.mean()
        b0, nb = rng.integers(0, f.shape[1] - 10), rng.integers(0, 11)
        f[:, b0:b0 + nb] = m
        t0, nt = rng.integers(0, max(1, len(f) - 5)), rng.integers(0, 6)
        f[t0:t0 + nt] = m
        return f
    return apply


def ctc_loss(logits, audio_lens, targets):
    """CTC loss of per-frame logits [B, T, vocab] against the targets' characters (EOT, never a
    character, is the blank)."""
    chars = [t[(t != -100) & (t != EOT)] for t in targets]
    return F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), torch.cat(chars),
                      torch.tensor(audio_lens), torch.tensor([len(c) for c in chars]),
                      blank=EOT, zero_infinity=True)


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
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--steps", type=int, default=3500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ctc", type=float, default=0.3, help="weight of the CTC loss")
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
    # Joint CTC / attention training (Kim, Hori and Watanabe, 2017): a linear CTC head on the
    # encoder output, used only here, makes the encoder align frames to characters early, which
    # the decoder's cross-attention then finds; the checkpoint does not hold it.
    ctc_head = torch.nn.Linear(model.dim, model.embed.num_embeddings)
    opt = torch.optim.AdamW(list(model.parameters()) + list(ctc_head.parameters()), lr=args.lr,
                            weight_decay=0.01)
    warmup = max(1, min(300, args.steps // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / args.steps))))
    augment = spec_augment(rng)
    start, step, avg = time.perf_counter(), 0, None
    while step < args.steps:
        for idx in batches(train_items, args.batch, rng):
            x, lens, inputs, targets = collate(train_items, idx, augment)
            audio, audio_lens = model.encode(x, lens)
            logits = model.decode(inputs, audio, audio_lens)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=-100)
            if args.ctc:
                loss = (1 - args.ctc) * loss + args.ctc * ctc_loss(ctc_head(audio), audio_lens,
                                                                   targets)
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

    report(model, test_items)
    save_checkpoint(model.eval(), args.out, dtype=torch.float16)  # a few MB, to ship
    print(f"saved {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
