"""xattn.audio: log-mel features against a float64 numpy implementation of the documented recipe
(np.fft, the HTK mel formula), audio files written here with Python's wave module, resampling
against the sampled signal, and bad input."""

import wave

import numpy as np
import pytest

import xattn
from xattn import audio


def reference_log_mel(x, sr=16000, n_fft=400, hop=160, n_mels=80, f_min=0.0, f_max=8000.0):
    """The recipe of xattn/log_mel.h in float64 numpy: reflected centred frames, periodic Hann,
    |rfft|^2, triangular filters on the HTK mel scale, log10 floored at max - 8, (x + 4) / 4."""
    x = np.asarray(x, np.float64)
    pad = n_fft // 2
    padded = np.pad(x, pad, mode="reflect")
    frames = 1 + len(x) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(np.stack([padded[t * hop:t * hop + n_fft] * window
                                         for t in range(frames)]), axis=1)) ** 2
    mel, hz = (lambda f: 2595 * np.log10(1 + f / 700)), (lambda m: 700 * (10 ** (m / 2595) - 1))
    points = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    f = np.arange(n_fft // 2 + 1) * sr / n_fft
    rise = (f[None] - points[:-2, None]) / (points[1:-1] - points[:-2])[:, None]
    fall = (points[2:, None] - f[None]) / (points[2:] - points[1:-1])[:, None]
    filters = np.maximum(0, np.minimum(rise, fall))
    log = np.log10(np.maximum(power @ filters.T, 1e-10))
    return (np.maximum(log, log.max() - 8) + 4) / 4, filters


def speechlike(n, seed, rate=16000):
    """A tone, noise, and a stretch of near-silence (so that the log floor matters)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    x += 0.05 * rng.standard_normal(n)
    x[n // 3:n // 2] *= 1e-4
    return x.astype(np.float32)


# f32 FFTs: their rounding, relative to a frame's largest bins, shows through log10 most in the
# weak mel bands; 1e-4 of values spanning [-1, 1.25] is far below any feature's meaning, and far
# above the 1.4e-6 measured on these signals.
TOL = 1e-4


@pytest.mark.parametrize("n", [16000, 3201, 201, 7])
@pytest.mark.parametrize("config", [{}, dict(n_fft=512, hop=128, n_mels=40, f_min=50.0,
                                             f_max=7000.0), dict(sample_rate=8000, n_fft=256,
                                                                 hop=80, n_mels=23)])
def test_log_mel_matches_the_recipe(n, config):
    pad = config.get("n_fft", 400) // 2
    if n <= pad:
        with pytest.raises(ValueError, match=rf"samples: need more than n_fft / 2 = {pad}"):
            audio.log_mel(np.zeros(n, np.float32), **config)
        return
    x = speechlike(n, n, config.get("sample_rate", 16000))
    got = audio.log_mel(x, **config)
    ref_config = dict(sr=config.get("sample_rate", 16000), n_fft=config.get("n_fft", 400),
                      hop=config.get("hop", 160), n_mels=config.get("n_mels", 80),
                      f_min=config.get("f_min", 0.0),
                      f_max=config.get("f_max", config.get("sample_rate", 16000) / 2))
    want, filters = reference_log_mel(x, **ref_config)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= TOL
    fb = audio.mel_filters(config.get("sample_rate", 16000), ref_config["n_fft"],
                           ref_config["n_mels"], ref_config["f_min"], ref_config["f_max"])
    assert np.abs(fb - filters).max() <= 1e-6


def test_log_mel_of_torch_and_of_silence():
    import torch
    x = speechlike(4000, 1)
    np.testing.assert_array_equal(audio.log_mel(torch.from_numpy(x)), audio.log_mel(x))
    silent = audio.log_mel(np.zeros(4000, np.float32))  # log10(1e-10) everywhere: finite
    np.testing.assert_array_equal(silent, np.full_like(silent, (-10 + 4) / 4))


def write_wav(path, samples_int16, rate):
    """samples [n] or [n, channels] of int16, as a PCM WAV file (Python's wave module)."""
    data = np.asarray(samples_int16, np.int16)
    channels = 1 if data.ndim == 1 else data.shape[1]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.astype("<i2").tobytes())


def test_read_mixes_channels_and_scales_pcm(tmp_path):
    rng = np.random.default_rng(2)
    stereo = rng.integers(-32768, 32767, size=(1000, 2), dtype=np.int16)
    write_wav(tmp_path / "s.wav", stereo, 22050)
    samples, rate = audio.read(tmp_path / "s.wav")
    assert rate == 22050 and samples.dtype == np.float32 and samples.shape == (1000,)
    np.testing.assert_allclose(samples, stereo.astype(np.float64).mean(axis=1) / 32768, atol=1e-7)


def test_resample_and_load(tmp_path):
    """A 440 Hz tone at 22050 Hz resampled to 16 kHz is the tone sampled at 16 kHz (away from
    the ends, where the converter sees zeros beyond the signal)."""
    t = np.arange(22050) / 22050
    write_wav(tmp_path / "tone.wav", np.round(16000 * np.sin(2 * np.pi * 440 * t)), 22050)
    loaded = audio.load(tmp_path / "tone.wav", 16000)
    assert abs(len(loaded) - 16000) <= 1
    want = 16000 / 32768 * np.sin(2 * np.pi * 440 * np.arange(len(loaded)) / 16000)
    assert np.abs(loaded[400:-400] - want[400:-400]).max() < 2e-3
    same = audio.resample(loaded, 16000, 16000)
    np.testing.assert_array_equal(same, loaded)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="missing.wav: not an audio file"):
        audio.read(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio at all")
    with pytest.raises(ValueError, match="text.wav: not an audio file"):
        audio.read(tmp_path / "text.wav")
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.int16), 16000)
    with pytest.raises(ValueError, match="empty.wav: holds no samples"):
        audio.read(tmp_path / "empty.wav")
    write_wav(tmp_path / "long.wav", np.zeros(16000 * 3, np.int16), 16000)
    with pytest.raises(ValueError, match=r"long.wav: is 3 s long, more than the 2 s allowed"):
        audio.read(tmp_path / "long.wav", max_seconds=2)
    with pytest.raises(TypeError, match="path: expected a str"):
        audio.read(3)


def test_bad_arguments():
    x = np.zeros(1000, np.float32)
    with pytest.raises(ValueError, match="hop: must be at most n_fft = 400, got 500"):
        audio.log_mel(x, hop=500)
    with pytest.raises(ValueError, match=r"f_min, f_max: need 0 <= f_min < f_max <= "
                                         r"sample_rate / 2 = 8000"):
        audio.log_mel(x, f_max=9000.0)
    with pytest.raises(ValueError, match="n_mels: must be 1 to 2\\^24, got 0"):
        audio.log_mel(x, n_mels=0)
    with pytest.raises(ValueError, match="samples: expected a 1-D float array, got 2-D"):
        audio.log_mel(np.zeros((2, 1000), np.float32))
    with pytest.raises(TypeError, match="samples: expected a numpy array"):
        audio.log_mel([0.0] * 1000)
    with pytest.raises(ValueError, match="to_rate: must be 1 to 1000000 Hz, got 0"):
        audio.resample(x, 16000, 0)
    with pytest.raises(TypeError, match="from_rate: expected an int, got float"):
        audio.resample(x, 16000.0, 8000)
