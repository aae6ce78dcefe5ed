"""Perceiver IO (Jaegle et al., 2021): a small learned latent array cross-attends to a long input,
self-attention blocks process the latents, and output queries cross-attend to the latents.

    latents = encode(inputs, input_lens)     # [B, num_latents, latent_dim]; linear in M
    latents = process(latents)
    outputs = decode(latents, queries)       # [B, O, output_dim]

All blocks are pre-LayerNorm attention + MLP with residuals. The input side is never quadratic:
its keys and values are projected once, per position, and the latents attend to them in one
kernel call; padded input positions reach the kernel as key lengths, so they are never read.
"""

import operator

import torch
from torch import nn

from ._blocks import Block, CrossAttentionBlock, check_divides, check_tokens


def check_lengths(lens, arg, batch, length):
    """lens (None, a sequence of ints or an integer tensor) as a list of `batch` ints in
    [0, length]; ValueError / TypeError naming `arg` otherwise."""
    if lens is None:
        return None
    if isinstance(lens, torch.Tensor):
        if lens.dim() != 1 or lens.dtype.is_floating_point or lens.dtype == torch.bool:
            raise TypeError(f"{arg}: expected a 1-D integer tensor, got {lens.dtype} "
                            f"{list(lens.shape)}")
        lens = lens.tolist()
    try:
        lens = list(lens)
    except TypeError:
        raise TypeError(f"{arg}: expected a sequence of ints, got {type(lens).__name__}") from None
    if len(lens) != batch:
        raise ValueError(f"{arg}: expected {batch} lengths (one per batch row), got {len(lens)}")
    for b, n in enumerate(lens):
        if isinstance(n, bool):
            raise TypeError(f"{arg}[{b}]: expected an int, got bool")
        try:
            lens[b] = n = operator.index(n)  # ints, numpy integers, 0-d integer tensors
        except TypeError:
            raise TypeError(f"{arg}[{b}]: expected an int, got {type(n).__name__}") from None
        if not 0 <= n <= length:
            raise ValueError(f"{arg}[{b}] = {n} is out of range [0, {length}]")
    return lens


class PerceiverIO(nn.Module):
    """Perceiver IO with learned latents.

    Args:
      input_dim: the width of each input element (features, with any position encoding).
      num_latents, latent_dim: the latent array's size.
      num_cross_heads: heads of the encoder's and decoder's cross-attention.
      num_latent_heads: heads of the latent self-attention blocks.
      num_self_layers: how many latent self-attention blocks `process` applies.
      query_dim: the width of the output queries (default latent_dim).
      output_dim: the width of each output (default query_dim).
      mlp_ratio: the MLPs' hidden width over their input width.
    Parameter names: latents, encoder.*, processor.{i}.*, decoder.*, output.*
    """

    def __init__(self, input_dim, num_latents, latent_dim, num_cross_heads=1,
                 num_latent_heads=8, num_self_layers=6, query_dim=None, output_dim=None,
                 mlp_ratio=4.0):
        super().__init__()
        query_dim = latent_dim if query_dim is None else query_dim
        output_dim = query_dim if output_dim is None else output_dim
        for name, value in dict(input_dim=input_dim, num_latents=num_latents,
                                latent_dim=latent_dim, query_dim=query_dim,
                                output_dim=output_dim).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if num_self_layers < 0:
            raise ValueError(f"num_self_layers: expected >= 0, got {num_self_layers}")
        check_divides(num_cross_heads, latent_dim, "num_cross_heads")
        check_divides(num_cross_heads, query_dim, "num_cross_heads")
        check_divides(num_latent_heads, latent_dim, "num_latent_heads")
        self.config = dict(input_dim=input_dim, num_latents=num_latents, latent_dim=latent_dim,
                           num_cross_heads=num_cross_heads, num_latent_heads=num_latent_heads,
                           num_self_layers=num_self_layers, query_dim=query_dim,
                           output_dim=output_dim, mlp_ratio=mlp_ratio)
        self.input_dim, self.latent_dim, self.query_dim = input_dim, latent_dim, query_dim
        self.latents = nn.Parameter(torch.empty(num_latents, latent_dim))
        nn.init.trunc_normal_(self.latents, std=0.02)
        self.encoder = CrossAttentionBlock(latent_dim, input_dim, num_cross_heads, mlp_ratio)
        self.processor = nn.ModuleList(Block(latent_dim, num_latent_heads, mlp_ratio, eps=1e-5)
                                       for _ in range(num_self_layers))
        self.decoder = CrossAttentionBlock(query_dim, latent_dim, num_cross_heads, mlp_ratio)
        self.output = nn.Linear(query_dim, output_dim)

    def encode(self, inputs, input_lens=None):
        """inputs [B, M, input_dim] -> latents [B, num_latents, latent_dim]. input_lens[b] (ints
        in [0, M]) is row b's true length: positions from it on have no effect at all."""
        check_tokens(inputs, "inputs", self.input_dim)
        lens = check_lengths(input_lens, "input_lens", inputs.shape[0], inputs.shape[1])
        if lens is not None and min(lens, default=inputs.shape[1]) < inputs.shape[1]:
            # The kernel never reads the padding, but norm_kv and the projections run over it:
            # junk there (NaN, or 1e20, whose square overflows) turns NaN, and 0 * NaN poisons
            # the weights' gradients. Zeroed, it has no effect at all, gradients included.
            pad = torch.arange(inputs.shape[1]) >= torch.tensor(lens).unsqueeze(1)
            inputs = inputs.masked_fill(pad.unsqueeze(2), 0.0)
        latents = self.latents.unsqueeze(0).expand(inputs.shape[0], -1, -1)
        return self.encoder(latents, inputs, lens)

    def process(self, latents):
        check_tokens(latents, "latents", self.latent_dim)
        for block in self.processor:
            latents = block(latents)
        return latents

    def decode(self, latents, queries):
        """queries [B, O, query_dim] attend to latents [B, N, latent_dim] -> [B, O, output_dim]."""
        check_tokens(latents, "latents", self.latent_dim)
        check_tokens(queries, "queries", self.query_dim, latents.shape[0])
        return self.output(self.decoder(queries, latents))

    def forward(self, inputs, queries, input_lens=None):
        check_tokens(queries, "queries", self.query_dim, inputs.shape[0]
                     if isinstance(inputs, torch.Tensor) and inputs.dim() == 3 else None)
        return self.decode(self.process(self.encode(inputs, input_lens)), queries)
