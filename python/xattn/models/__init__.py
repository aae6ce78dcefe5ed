"""The architectures built on xattn's kernel, as torch.nn.Modules that train through its fused
forward and backward, and load unchanged in the C++ twins (xattn::models, `xattn model`):

    model = xattn.models.PerceiverIO(input_dim=32, num_latents=64, latent_dim=128)
    out = model(inputs, queries, input_lens=[900, 1024])
    xattn.models.save_checkpoint(model, "perceiver.safetensors")

Needs torch.
"""

from ._checkpoint import load_checkpoint, save_checkpoint
from .ccnet import CrissCrossAttention
from .crossformer import (CrossFormer, CrossFormerBlock, CrossScaleEmbedding,
                          DynamicPositionBias, LSDA)
from .crossvit import CrossViT, CrossViTCrossAttention, CrossViTFusion
from .perceiver import PerceiverIO
from .speech import SpeechRecognizer

__all__ = ["CrissCrossAttention", "CrossFormer", "CrossFormerBlock", "CrossScaleEmbedding",
           "DynamicPositionBias", "LSDA", "CrossViT", "CrossViTCrossAttention", "CrossViTFusion",
           "PerceiverIO", "SpeechRecognizer",
           "save_checkpoint", "load_checkpoint"]
