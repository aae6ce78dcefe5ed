"""Speech input: audio files and the log-mel features xattn's speech models read, computed by the
C++ library (libsndfile, libsamplerate, FFTW), so training in Python and inference in C++ see the
same features.

    samples, rate = xattn.audio.read("utterance.wav")          # mono float32, its own rate
    samples = xattn.audio.load("utterance.wav", 16000)         # resampled to 16 kHz
    features = xattn.audio.log_mel(samples)                     # [frames, 80], 10 ms frames
"""

import numbers

import numpy as np

from . import _xattn

SAMPLE_RATE, N_FFT, HOP, N_MELS = 16000, 400, 160, 80


def read(path, max_seconds=600.0):
    """(samples, sample_rate): an audio file libsndfile reads (WAV, FLAC, OGG, ...), its channels
    averaged into one float32 array in [-1, 1]. ValueError naming the file when it is missing,
    not audio, empty, or longer than max_seconds."""
    return _xattn.read_audio(_path(path), _real(max_seconds, "max_seconds"))


def resample(samples, from_rate, to_rate):
    """1-D float32 samples converted from from_rate to to_rate Hz (libsamplerate's best sinc)."""
    return _xattn.resample(_samples(samples), _int(from_rate, "from_rate"), _int(to_rate, "to_rate"))


def load(path, sample_rate=SAMPLE_RATE, max_seconds=600.0):
    """read(path), resampled to sample_rate: mono float32 samples."""
    samples, rate = read(path, max_seconds)
    return resample(samples, rate, sample_rate)


def log_mel(samples, sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop=HOP, n_mels=N_MELS, f_min=0.0,
            f_max=None):
    """The log-mel spectrogram [1 + len(samples) // hop, n_mels] (float32) of 1-D samples at
    sample_rate: centred frames of n_fft samples every hop (the signal reflected at its ends), a
    periodic Hann window, the power spectrum through triangular HTK-mel filters from f_min to
    f_max (default sample_rate / 2), log10 floored at the maximum - 8, then (x + 4) / 4."""
    sample_rate = _int(sample_rate, "sample_rate")
    f_max = sample_rate / 2 if f_max is None else _real(f_max, "f_max")
    return _xattn.log_mel(_samples(samples), sample_rate, _int(n_fft, "n_fft"), _int(hop, "hop"),
                          _int(n_mels, "n_mels"), _real(f_min, "f_min"), f_max)


def mel_filters(sample_rate=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, f_min=0.0, f_max=None):
    """The filterbank log_mel applies: [n_mels, n_fft // 2 + 1] float32."""
    sample_rate = _int(sample_rate, "sample_rate")
    f_max = sample_rate / 2 if f_max is None else _real(f_max, "f_max")
    return _xattn.mel_filters(sample_rate, _int(n_fft, "n_fft"), _int(n_mels, "n_mels"),
                              _real(f_min, "f_min"), f_max)


def _path(path):
    import os
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def _samples(samples):
    try:
        import torch
        if isinstance(samples, torch.Tensor):
            samples = samples.detach().cpu().numpy()
    except ImportError:
        pass
    if not isinstance(samples, np.ndarray):
        raise TypeError(f"samples: expected a numpy array or torch tensor, got "
                        f"{type(samples).__name__}")
    if samples.ndim != 1 or samples.dtype.kind != "f":
        raise ValueError(f"samples: expected a 1-D float array, got {samples.ndim}-D "
                         f"{samples.dtype}")
    return np.ascontiguousarray(samples, dtype=np.float32)


def _int(x, arg):
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{arg}: expected an int, got {type(x).__name__}")
    return int(x)


def _real(x, arg):
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{arg}: expected a real number, got {type(x).__name__}")
    return float(x)
