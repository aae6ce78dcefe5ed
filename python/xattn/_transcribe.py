"""xattn.transcribe: speech to text with the speech recogniser (xattn.models.SpeechRecognizer),
the checkpoint the repository ships unless told otherwise."""

import functools
import numbers
import os

from . import audio as _audio

# The checkpoint examples/speech/train.py made, copied beside the package by the build.
SHIPPED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "speech_model.safetensors")
MAX_SECONDS = 120.0  # the model was trained on utterances of a few seconds


def transcribe(speech, model=None, max_tokens=200):
    """The text spoken in `speech`: an audio file's path (WAV, FLAC, OGG, ...; any rate, mixed
    to mono) or mono float samples at 16 kHz (numpy array or torch tensor). `model` is a
    SpeechRecognizer, a checkpoint's path, or None for the shipped model. Decodes greedily, as
    `xattn transcribe FILE` does (which gives the same text from the same checkpoint).

    ValueError names the argument for a missing or unreadable file, empty or over-long audio,
    or a checkpoint of another model; TypeError for arguments of the wrong type."""
    import torch
    from .models import SpeechRecognizer
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, numbers.Integral) or max_tokens < 1:
        raise ValueError(f"max_tokens: expected an int >= 1, got {max_tokens!r}")
    if model is None or isinstance(model, (str, os.PathLike)):
        model = _load(os.path.abspath(os.fspath(SHIPPED_MODEL if model is None else model)))
    elif not isinstance(model, SpeechRecognizer):
        raise TypeError(f"model: expected a SpeechRecognizer, a checkpoint path or None, got "
                        f"{type(model).__name__}")
    if isinstance(speech, (str, os.PathLike)):
        samples = _audio.load(speech, _audio.SAMPLE_RATE, MAX_SECONDS)
    else:
        samples = _audio._samples(speech)
        if len(samples) > MAX_SECONDS * _audio.SAMPLE_RATE:
            raise ValueError(f"speech: at most {MAX_SECONDS:.0f} s of audio, got "
                             f"{len(samples) / _audio.SAMPLE_RATE:.1f} s")
    if len(samples) == 0:
        raise ValueError("speech: expected audio, got no samples")
    features = torch.from_numpy(_audio.log_mel(samples, n_mels=model.config["n_mels"]))
    return model.transcribe(features, max_tokens=int(max_tokens))


@functools.lru_cache(maxsize=4)
def _load(path):
    """The SpeechRecognizer of a checkpoint, loaded once per path."""
    from .models import SpeechRecognizer, load_checkpoint
    if not os.path.exists(path):
        raise ValueError(f"model: no checkpoint at {path}" + (
            " (the shipped model is built from examples/speech/model.safetensors)"
            if path == SHIPPED_MODEL else ""))
    model = load_checkpoint(path)
    if not isinstance(model, SpeechRecognizer):
        raise ValueError(f"model: {path} holds a {type(model).__name__}, not a SpeechRecognizer")
    return model
