"""The speech recogniser the repository ships (examples/speech/model.safetensors): its C++
transcriber (`xattn transcribe`) and its Python module (xattn.transcribe) agree on it, it still
hears held-out voices, the attention-map picture is right, and xattn.transcribe's bad input."""

import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

import xattn
import xattn.models as M

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(xattn.__file__).resolve().parents[2] / "xattn"
SHIPPED = ROOT / "examples" / "speech" / "model.safetensors"
sys.path.insert(0, str(ROOT / "examples" / "speech"))
import data  # noqa: E402  (examples/speech/data.py: the espeak-ng recipe)
import evaluate  # noqa: E402  (its character error rate)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """12 utterances in the held-out voices (seed 123: not the training set's seed), as WAV
    files at espeak-ng's own rate, with their texts."""
    tmp = tmp_path_factory.mktemp("speech")
    rng = np.random.default_rng(123)
    jobs, _ = data.jobs(12, data.TEST_ACCENTS, data.TEST_VARIANTS, rng)
    out = []
    for i, (text, voice, speed, pitch, _, _) in enumerate(jobs):
        path = tmp / f"u{i}.wav"
        data.speak(text, voice, speed, pitch, str(path))
        out.append((path, text))
    return out


def cpp_transcribe(path, *args):
    proc = subprocess.run([str(BIN), "transcribe", str(path), "--threads", "2", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\n")[0]


def test_cpp_and_python_give_the_same_transcripts(held_out):
    for path, _ in held_out:
        assert cpp_transcribe(path) == xattn.transcribe(path)


def test_cpp_and_python_give_the_same_logits(tmp_path, held_out):
    model = M.load_checkpoint(SHIPPED)
    features = torch.from_numpy(xattn.audio.log_mel(xattn.audio.load(held_out[0][0])))
    tokens = torch.tensor([M.speech.SOT] + M.speech.encode_text(held_out[0][1]))
    np.save(tmp_path / "features.npy", features.numpy())
    np.save(tmp_path / "tokens.npy", tokens.float().numpy())
    proc = subprocess.run([str(BIN), "model", str(SHIPPED), "--in", f"features={tmp_path}/features.npy",
                           "--in", f"tokens={tmp_path}/tokens.npy", "-o",
                           f"logits={tmp_path}/logits.npy"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "logits.npy")
    with torch.no_grad():
        want = model(features[None], tokens[None])[0].numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_the_shipped_model_hears_held_out_voices(held_out):
    """A small sample of the held-out set (the README's command measures all of it): a
    regression check on the checkpoint and the features, with room for a sample's noise."""
    hyps = [cpp_transcribe(p, "--beams", "2") for p, _ in held_out]
    assert evaluate.character_error_rate(hyps, [t for _, t in held_out]) <= 0.10, hyps


def viridis_yellow(pixel):
    return np.abs(pixel[:3] * 255 - [253, 231, 37]).max() <= 1


def test_attention_map_picture(tmp_path, held_out):
    """One row per word heard, each at its own peak somewhere (viridis' yellow), the plot
    where the layout puts it."""
    path, _ = held_out[1]
    png = tmp_path / "map.png"
    text = cpp_transcribe(path, "--attention-map", str(png))
    image = matplotlib.image.imread(png)
    words = text.split()
    assert image.shape[0] == 40 + 28 * len(words) + 48
    for r in range(len(words)):
        row = image[40 + 28 * r + 14]
        assert sum(viridis_yellow(p) for p in row) >= 1, r


def test_attention_map_bad_path_is_refused_before_work(tmp_path, held_out):
    proc = subprocess.run([str(BIN), "transcribe", str(held_out[0][0]), "--attention-map",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--attention-map" in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_transcribe_takes_a_path_or_samples(held_out):
    path, _ = held_out[2]
    samples = xattn.audio.load(path)
    text = xattn.transcribe(path)
    assert xattn.transcribe(samples) == text
    assert xattn.transcribe(torch.from_numpy(samples), model=SHIPPED) == text
    assert xattn.transcribe(samples, model=M.load_checkpoint(SHIPPED)) == text


def test_transcribe_bad_input(tmp_path):
    perceiver = tmp_path / "perceiver.safetensors"
    M.save_checkpoint(M.PerceiverIO(input_dim=4, num_latents=2, latent_dim=8, output_dim=3), perceiver)
    (tmp_path / "junk.wav").write_text("not audio")
    cases = [
        ((tmp_path / "junk.wav",), {}, ValueError, "not an audio file"),
        ((tmp_path / "missing.wav",), {}, ValueError, "missing.wav"),
        ((np.zeros(0, np.float32),), {}, ValueError, "speech: expected audio"),
        ((np.zeros(121 * 16000, np.float32),), {}, ValueError, "speech: at most 120 s"),
        ((np.zeros((2, 100), np.float32),), {}, ValueError, "samples: expected a 1-D"),
        (([0.0] * 100,), {}, TypeError, "samples: expected a numpy array"),
        ((np.zeros(1600, np.float32),), {"model": perceiver}, ValueError, "not a SpeechRecognizer"),
        ((np.zeros(1600, np.float32),), {"model": tmp_path / "none.safetensors"}, ValueError,
         "model: no checkpoint"),
        ((np.zeros(1600, np.float32),), {"model": 3}, TypeError, "model: expected"),
        ((np.zeros(1600, np.float32),), {"max_tokens": 0}, ValueError, "max_tokens"),
    ]
    for args, kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            xattn.transcribe(*args, **kwargs)
