"""Checkpoints shared with the C++ models: a safetensors file holding the module's state_dict
under its own names, with the model's kind and constructor arguments in the metadata
("xattn.model", "xattn.config" as JSON), so that xattn::models::load (C++), `xattn model` (CLI)
and load_checkpoint rebuild the same module from the file alone."""

import json

from .._safetensors import load_safetensors, save_safetensors

MODEL_KEY, CONFIG_KEY = "xattn.model", "xattn.config"


def _kinds():
    from . import ccnet, crossformer, crossvit, perceiver, speech
    return {cls.__name__: cls for cls in (ccnet.CrissCrossAttention,
                                          crossvit.CrossViTCrossAttention, crossvit.CrossViTFusion,
                                          crossvit.CrossViT, perceiver.PerceiverIO,
                                          speech.SpeechRecognizer,
                                          *crossformer.MODULES)}


def save_checkpoint(module, path, dtype=None):
    """Writes module's parameters and configuration to a safetensors file (atomically), in
    `dtype` (torch.float16 or torch.bfloat16 halve the file; the loaders compute in float32)
    or, by default, as the module holds them."""
    import torch
    kind = type(module).__name__
    if kind not in _kinds():
        raise TypeError(f"module: expected one of {', '.join(_kinds())}, got {kind}")
    if dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"dtype: expected None, torch.float32, torch.float16 or torch.bfloat16, "
                        f"got {dtype}")
    tensors = {name: t.detach().to(dtype or t.dtype).contiguous()
               for name, t in module.state_dict().items()}
    save_safetensors(path, tensors, {MODEL_KEY: kind, CONFIG_KEY: json.dumps(module.config)})


def load_checkpoint(path):
    """The module a save_checkpoint file describes, with its parameters, in eval mode."""
    import torch
    tensors, metadata = load_safetensors(path, framework="torch", with_metadata=True)
    kind = metadata.get(MODEL_KEY)
    if kind not in _kinds():
        raise ValueError(f"{path}: not an xattn model checkpoint (metadata '{MODEL_KEY}' is "
                         f"{kind!r}; expected one of {', '.join(_kinds())})")
    module = _kinds()[kind](**json.loads(metadata[CONFIG_KEY]))
    with torch.no_grad():
        module.load_state_dict({k: v.float() for k, v in tensors.items()})
    return module.eval()
