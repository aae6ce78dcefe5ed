"""Spoken utterances made here, for the speech recogniser: espeak-ng says random sequences of a
small vocabulary's words in many voices, speeds and pitches, with noise mixed in, and the
utterances become xattn.audio's log-mel features (the C++ code the transcriber runs too).

The held-out set is spoken by voices (accent and variant) that never speak in training, and its
word sequences never occur in training.

    PYTHONPATH=build/python /usr/bin/python3 examples/speech/data.py --out build/speech-data
"""

import argparse
import concurrent.futures
import os
import subprocess
import tempfile
import zlib

import numpy as np

from xattn import audio

WORDS = ("zero one two three four five six seven eight nine oh call dial send stop start open "
         "close red green blue yes no please now left right up down the at go").split()
# (No homophones: with "to" beside "two", half of either would be wrong whatever was heard.)
# espeak-ng accents and voice variants; the held-out pairs use ones training never hears. The
# more voices training hears, the better it meets new ones.
TRAIN_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-us-nyc"]
TRAIN_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m7", "m8", "f1", "f2", "f3", "f4", "klatt",
                  "klatt2", "klatt3", "adam", "linda", "john", "steph", "max", "paul"]
TEST_ACCENTS = ["en-029", "en-gb-x-gbclan"]
TEST_VARIANTS = ["m6", "f5"]
SPEEDS, PITCHES = (120, 200), (20, 80)  # words per minute, espeak-ng's 0-99 pitch
SNR_DB = (10.0, 40.0)
CLEAN = 0.25  # the share of utterances left without noise (a model that never heard silence
              # as silence invents words in it)
MIN_WORDS, MAX_WORDS = 2, 6
SAMPLE_RATE = audio.SAMPLE_RATE


def sentence(rng):
    return " ".join(rng.choice(WORDS, size=rng.integers(MIN_WORDS, MAX_WORDS + 1)))


def speak(text, voice, speed, pitch, path):
    """espeak-ng's WAV of `text` at `path`. It runs without the LD_PRELOAD its caller may run
    under (the sanitizer tests preload AddressSanitizer, which deadlocks espeak-ng's threads)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path,
                    text], check=True, capture_output=True, env=env, timeout=60)


def with_noise(samples, snr_db, rng):
    """White noise at snr_db below the signal's power."""
    power = float(np.mean(samples.astype(np.float64) ** 2)) or 1e-12
    noise = rng.standard_normal(len(samples)) * np.sqrt(power / 10 ** (snr_db / 10))
    return (samples + noise).astype(np.float32)


def utterance(job):
    """(features [frames, 80] float16, text, voice) for one (text, voice, speed, pitch, snr,
    seed) job; snr None: no noise."""
    text, voice, speed, pitch, snr, seed = job
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "u.wav")
        speak(text, voice, speed, pitch, path)
        samples = audio.load(path, SAMPLE_RATE)
    if snr is not None:
        samples = with_noise(samples, snr, np.random.default_rng(seed))
    return audio.log_mel(samples).astype(np.float16), text, voice


def jobs(count, accents, variants, rng, exclude=frozenset()):
    out, texts = [], set()
    while len(out) < count:
        text = sentence(rng)
        if text in exclude:
            continue
        texts.add(text)
        voice = f"{rng.choice(accents)}+{rng.choice(variants)}"
        out.append((text, voice, int(rng.integers(*SPEEDS)), int(rng.integers(*PITCHES)),
                    None if rng.random() < CLEAN else float(rng.uniform(*SNR_DB)),
                    int(rng.integers(1 << 31))))
    return out, texts


def build(out_dir, train_count, test_count, seed=0, workers=2, progress=print):
    """Writes out_dir/{train,test}.npz (features concatenated, their frame offsets, texts,
    voices); returns their paths. Existing files made by the same recipe, sizes and seed are
    kept."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, f"{name}.npz") for name in ("train", "test")}
    recipe = (WORDS, TRAIN_ACCENTS, TRAIN_VARIANTS, TEST_ACCENTS, TEST_VARIANTS, SPEEDS, PITCHES,
              SNR_DB, CLEAN, MIN_WORDS, MAX_WORDS)
    stamp = f"{train_count}-{test_count}-{seed}-{zlib.crc32(repr(recipe).encode()):08x}"
    if all(os.path.exists(p) and str(np.load(p)["stamp"]) == stamp for p in paths.values()):
        return paths
    rng = np.random.default_rng(seed)
    test_jobs, test_texts = jobs(test_count, TEST_ACCENTS, TEST_VARIANTS, rng)
    train_jobs, _ = jobs(train_count, TRAIN_ACCENTS, TRAIN_VARIANTS, rng, frozenset(test_texts))
    for name, todo in (("train", train_jobs), ("test", test_jobs)):
        items = []
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for i, item in enumerate(pool.map(utterance, todo)):
                items.append(item)
                if (i + 1) % 500 == 0 or i + 1 == len(todo):
                    progress(f"{name}: {i + 1}/{len(todo)} utterances")
        features = [f for f, _, _ in items]
        np.savez(paths[name], features=np.concatenate(features),
                 offsets=np.cumsum([0] + [len(f) for f in features]),
                 texts=np.array([t for _, t, _ in items]), voices=np.array([v for _, _, v in items]),
                 stamp=stamp)
    return paths


def load(path):
    """[(features [frames, 80] float32, text)] of a build() file."""
    data = np.load(path)
    f, o = data["features"], data["offsets"]
    return [(f[o[i]:o[i + 1]].astype(np.float32), str(t)) for i, t in enumerate(data["texts"])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="build/speech-data")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for name, path in build(args.out, args.train, args.test, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
