"""The real-time factor of `xattn transcribe` (audio seconds per second of compute) and how its
time splits between the front end (reading, resampling, log-mel), the encoder and the decoder:
medians over held-out utterances (examples/speech/data.py's held-out voices), each run --runs
times, greedy and with a beam search.

    PYTHONPATH=build/python /usr/bin/python3 bench/transcribe_speed.py [--threads 2] [--runs 5]
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "speech"))
import data  # noqa: E402

TIMES = re.compile(r"audio ([\d.]+) s; features ([\d.]+) ms, encoder ([\d.]+) ms, "
                   r"decoder ([\d.]+) ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=str(ROOT / "build" / "xattn"))
    ap.add_argument("--utterances", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    jobs, _ = data.jobs(args.utterances, data.TEST_ACCENTS, data.TEST_VARIANTS,
                        np.random.default_rng(7))
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, (text, voice, speed, pitch, _, _) in enumerate(jobs):
            files.append(f"{tmp}/u{i}.wav")
            data.speak(text, voice, speed, pitch, files[-1])
        print(f"{args.utterances} utterances x {args.runs} runs, {args.threads} threads "
              f"(medians; features = read + resample + log-mel)")
        print("| decoding | audio s | features ms | encoder ms | decoder ms | x real time |")
        print("|---|---|---|---|---|---|")
        for beams in (1, 4):
            rows = []
            for path in files:
                for _ in range(args.runs):
                    out = subprocess.run([args.binary, "transcribe", path, "--beams", str(beams),
                                          "--threads", str(args.threads)], capture_output=True,
                                         text=True, check=True).stdout
                    rows.append([float(x) for x in TIMES.search(out).groups()])
            audio, front, enc, dec = np.median(np.array(rows), axis=0)
            rtf = np.median([r[0] / (sum(r[1:]) / 1000) for r in rows])
            print(f"| {'greedy' if beams == 1 else f'{beams} beams'} | {audio:.2f} | {front:.1f} | "
                  f"{enc:.1f} | {dec:.1f} | {rtf:.1f} |")


if __name__ == "__main__":
    main()
