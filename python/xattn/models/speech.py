"""A small encoder-decoder speech recogniser in Whisper's design, every attention xattn's kernel:
log-mel frames -> two 1-D convolutions (the second halves the frame rate) -> encoder
self-attention blocks -> a decoder whose text tokens attend causally to themselves and across to
the encoder's output -> characters.

Attention layers carry torch.nn.MultiheadAttention's parameter names (in_proj_weight,
in_proj_bias, out_proj.*), so the C++ twin runs them as xattn::nn::MultiheadAttention, with its
KVCache for decoding: the encoder output projected once, the decoder's own keys appended a token
at a time, beams sharing one cache.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import _attention
from ._blocks import Mlp

# Tokens: end of text, start of text, then the characters.
EOT, SOT = 0, 1
CHARS = " abcdefghijklmnopqrstuvwxyz'"


def encode_text(text):
    """The token ids of `text` (lower-cased; characters outside CHARS are dropped)."""
    return [2 + CHARS.index(c) for c in text.lower() if c in CHARS]


def decode_tokens(tokens):
    """The text of token ids, up to the first EOT (SOT and EOT themselves dropped)."""
    out = []
    for t in tokens:
        if t == EOT:
            break
        if t >= 2:
            out.append(CHARS[t - 2])
    return "".join(out)


def sinusoids(length, dim):
    """[length, dim] positions: sin on the first half of the channels, cos on the second, at
    geometrically spaced frequencies 1 ... 1/10000 (Whisper's encoder positions)."""
    half = dim // 2
    rates = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / max(half - 1, 1))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * rates[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


class Attention(nn.Module):
    """Multi-head attention with torch.nn.MultiheadAttention's parameters (batch first):
    q, k, v = x·W_{q,k,v}ᵀ + b from in_proj_weight [3·dim, dim] and in_proj_bias, heads as
    strided views, one xattn kernel call, out_proj."""

    def __init__(self, dim, num_heads):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} heads must divide the width {dim}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def heads(self, x, part):
        """x [B, L, dim] projected by part 0 (q), 1 (k) or 2 (v), as [B, H, L, D]."""
        dim = x.shape[-1]
        w = self.in_proj_weight[part * dim:(part + 1) * dim]
        b = self.in_proj_bias[part * dim:(part + 1) * dim]
        y = F.linear(x, w, b)
        return y.view(*y.shape[:2], self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, x, memory=None, kv_lens=None, causal=False):
        """x attends to memory (x itself when None); keys past kv_lens[b] are unseen."""
        memory = x if memory is None else memory
        q, k, v = self.heads(x, 0), self.heads(memory, 1), self.heads(memory, 2)
        out = _attention.attention(q, k, v, kv_lens=kv_lens, causal=causal,
                                   align="bottom_right")
        return self.out_proj(out.transpose(1, 2).reshape(x.shape))


class EncoderBlock(nn.Module):
    """x + attn(norm1(x)) over the valid frames, then + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, lens):
        x = x + self.attn(self.norm1(x), kv_lens=lens)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """x + self_attn(norm1(x)) (causal), + cross_attn(norm2(x), audio), + mlp(norm3(x))."""

    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.cross_attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm3, self.mlp = nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, audio, audio_lens):
        x = x + self.self_attn(self.norm1(x), causal=True)
        x = x + self.cross_attn(self.norm2(x), audio, kv_lens=audio_lens)
        return x + self.mlp(self.norm3(x))


class SpeechRecognizer(nn.Module):
    """features [B, T, n_mels] (xattn.audio.log_mel, padded past `lens`) and tokens [B, L]
    (SOT first) -> logits [B, L, vocab] for the next token at each position.

    encode(features, lens) -> (audio [B, ceil(T/2), dim], audio_lens); decode(tokens, audio,
    audio_lens) -> logits. transcribe(features) decodes greedily (see also beam search in the C++
    twin)."""

    def __init__(self, n_mels=80, dim=128, num_heads=4, encoder_layers=4, decoder_layers=3,
                 mlp_ratio=4.0):
        super().__init__()
        if dim % 2 or dim % num_heads:
            raise ValueError(f"dim: must be even and a multiple of num_heads = {num_heads}, "
                             f"got {dim}")
        self.config = dict(n_mels=n_mels, dim=dim, num_heads=num_heads,
                           encoder_layers=encoder_layers, decoder_layers=decoder_layers,
                           mlp_ratio=mlp_ratio)
        self.dim = dim
        self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)
        self.encoder = nn.ModuleList(EncoderBlock(dim, num_heads, mlp_ratio)
                                     for _ in range(encoder_layers))
        self.encoder_norm = nn.LayerNorm(dim)
        self.embed = nn.Embedding(2 + len(CHARS), dim)
        # Also the output layer (tied): unit-variance rows would give logits of size √dim·|x|.
        nn.init.normal_(self.embed.weight, std=dim ** -0.5)
        self.decoder = nn.ModuleList(DecoderBlock(dim, num_heads, mlp_ratio)
                                     for _ in range(decoder_layers))
        self.decoder_norm = nn.LayerNorm(dim)

    @staticmethod
    def audio_lens(lens):
        """Encoder frames after the stride-2 convolution: ceil(T / 2)."""
        return [(int(n) + 1) // 2 for n in lens]

    def encode(self, features, lens=None):
        batch, frames, _ = features.shape
        lens = [frames] * batch if lens is None else list(lens)
        # Frames past a row's length are zeroed before each convolution: the valid frames then
        # see, past their end, the zeros an utterance alone is padded with, whatever the padding
        # held; the attention never reads past audio_lens.
        padding = torch.arange(frames)[None, :] >= torch.tensor(lens)[:, None]
        x = features.masked_fill(padding[:, :, None], 0.0)  # (0·NaN would be NaN)
        x = F.gelu(self.conv1(x.transpose(1, 2)))
        x = x.masked_fill(padding[:, None, :], 0.0)
        # Frames first before the GELU, in memory too: torch 1.13's GELU backward miscomputes a
        # gradient whose strides differ from its input's (seen on an Intel Xeon: zeros, or
        # garbage), which a transpose after it would hand it.
        x = F.gelu(self.conv2(x).transpose(1, 2).contiguous())
        x = x + sinusoids(x.shape[1], self.dim)
        audio_lens = self.audio_lens(lens)
        for block in self.encoder:
            x = block(x, audio_lens)
        return self.encoder_norm(x), audio_lens

    def decode(self, tokens, audio, audio_lens):
        x = self.embed(tokens) + sinusoids(tokens.shape[1], self.dim)
        for block in self.decoder:
            x = block(x, audio, audio_lens)
        return self.decoder_norm(x) @ self.embed.weight.t()

    def forward(self, features, tokens, lens=None):
        audio, audio_lens = self.encode(features, lens)
        return self.decode(tokens, audio, audio_lens)

    @torch.no_grad()
    def transcribe(self, features, max_tokens=200):
        """Greedy decoding of one utterance's features [T, n_mels]: the text. (Recomputes the
        prefix each step: the reference the C++ twin's cached decoding is checked against.)"""
        audio, audio_lens = self.encode(features[None])
        tokens = [SOT]
        for _ in range(max_tokens):
            logits = self.decode(torch.tensor([tokens]), audio, audio_lens)
            tokens.append(int(logits[0, -1].argmax()))
            if tokens[-1] == EOT:
                break
        return decode_tokens(tokens[1:])
