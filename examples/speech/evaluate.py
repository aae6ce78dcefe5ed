"""The speech recogniser's character error rate on the held-out set (data.py: voices and word
sequences training never met), decoded greedily as `xattn transcribe` does.

    PYTHONPATH=build/python /usr/bin/python3 examples/speech/evaluate.py   # the shipped model
"""

import argparse
import os
import sys

import torch

from xattn.models import load_checkpoint
from xattn.models.speech import EOT, SOT, decode_tokens

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402  (examples/speech/data.py)

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.safetensors")


@torch.no_grad()
def greedy(model, items, batch=64, max_tokens=60):
    """The texts of items [(features [T, n_mels], text)], decoded greedily in batches (each
    step re-runs the decoder on the whole prefix)."""
    was_training = model.training
    model.eval()
    texts = []
    for i in range(0, len(items), batch):
        feats = [torch.from_numpy(f) for f, _ in items[i:i + batch]]
        lens = [len(f) for f in feats]
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        audio, audio_lens = model.encode(x, lens)
        tokens = torch.full((len(feats), 1), SOT, dtype=torch.long)
        done = torch.zeros(len(feats), dtype=torch.bool)
        for _ in range(max_tokens):
            nxt = model.decode(tokens, audio, audio_lens)[:, -1].argmax(-1)
            nxt[done] = EOT
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            done |= nxt == EOT
            if done.all():
                break
        texts += [decode_tokens(t[1:].tolist()) for t in tokens]
    model.train(was_training)
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


def report(model, items, examples=5):
    """Prints the held-out character error rate, the set's size and a few examples."""
    hyps, refs = greedy(model, items), [t for _, t in items]
    edits = sum(edit_distance(h, r) for h, r in zip(hyps, refs))
    chars = sum(map(len, refs))
    exact = sum(h == r for h, r in zip(hyps, refs))
    print(f"held-out character error rate: {100 * edits / max(1, chars):.2f}% ({edits} edits in "
          f"{chars} characters of {len(refs)} utterances; {exact} transcribed exactly)")
    for h, r in list(zip(hyps, refs))[:examples]:
        print(f"  said: {r!r}\n  heard: {h!r}")
    return edits / max(1, chars)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=SHIPPED)
    ap.add_argument("--data", default="build/speech-data")
    ap.add_argument("--train", type=int, default=10000, help="as train.py made the data")
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = data.build(args.data, args.train, args.test, seed=args.seed,
                       progress=lambda m: print("data: " + m, flush=True))
    report(load_checkpoint(args.model), data.load(paths["test"]))


if __name__ == "__main__":
    main()
