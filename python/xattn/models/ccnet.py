"""CCNet's criss-cross attention (Huang et al., "CCNet: Criss-Cross Attention for Semantic
Segmentation", 2019) as a torch module whose attention is xattn's criss-cross kernel, with the
official code's parameter names so that its checkpoints load."""

import torch
import torch.nn.functional as F
from torch import nn

from .._criss_cross import criss_cross_attention


class CrissCrossAttention(nn.Module):
    """y = γ·CC(x) + x on a feature map x [B, C, H, W], applied `recurrence` times with the same
    weights (RCCA; the paper uses 2, so that every pixel reaches every other).

    CC: q = query_conv(x), k = key_conv(x) (1x1 convolutions to C // 8 channels), v = value_conv(x)
    (1x1, C channels); the pixel (i, j) attends to the H + W - 1 pixels of its row and column,
    itself once, with unscaled scores q·k and one softmax over the whole cross. γ (`gamma`, [1])
    starts at 0, so a new module is the identity.

    The 1x1 convolutions run as one, channels last, and the attention as
    xattn.criss_cross_attention on strided views of its result: a row problem and a column
    problem merged by log-sum-exp, so memory stays a small multiple of the map (no
    [B, H, W, H + W] score array, as the official code has).
    """

    def __init__(self, in_channels, recurrence=1):
        super().__init__()
        for value, arg, least in ((in_channels, "in_channels", 8), (recurrence, "recurrence", 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{arg}: expected an int >= {least}, got {value!r}")
        self.config = {"in_channels": in_channels, "recurrence": recurrence}
        self.recurrence = recurrence
        self.query_conv = nn.Conv2d(in_channels, in_channels // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(in_channels, in_channels // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        """x [B, C, H, W] -> y [B, C, H, W], in channels-last memory (torch.channels_last)."""
        channels = self.config["in_channels"]
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != channels:
            raise ValueError(f"x: expected [batch, {channels}, height, width], got "
                             f"{list(x.shape)}")
        for _ in range(self.recurrence):
            # Channels-last memory throughout (the result too): the attention's output
            # [B, H, W, C] is then that memory layout of the [B, C, H, W] it is added to.
            x = x.contiguous(memory_format=torch.channels_last)
            x = self.gamma * self.criss_cross(x).permute(0, 3, 1, 2) + x
        return x

    def criss_cross(self, x):
        """CC(x) channels last: [B, C, H, W] -> [B, H, W, C]."""
        convs = (self.query_conv, self.key_conv, self.value_conv)
        weight = torch.cat([c.weight for c in convs])
        bias = torch.cat([c.bias for c in convs])
        # One convolution for all three, on channels-last memory, so that its output read as
        # [B, H, W, C/8 + C/8 + C] is contiguous (torch's 1x1 convolution, oneDNN, is also
        # several times faster here than its matrix product, OpenBLAS).
        x = x.contiguous(memory_format=torch.channels_last)
        qkv = F.conv2d(x, weight, bias).permute(0, 2, 3, 1)
        qk = self.query_conv.out_channels
        q, k, v = qkv[..., :qk], qkv[..., qk:2 * qk], qkv[..., 2 * qk:]
        return criss_cross_attention(q, k, v, scale=1.0)
