"""CrossFormer (Wang et al., ICLR 2022): a four-stage vision transformer whose embeddings mix
scales (the cross-scale embedding layer, CEL), whose attention alternates between short- and
long-distance groups (LSDA), with a learned position bias made by a small MLP (DPB).

Parameter names follow the official code (cheerss/CrossFormer), so its checkpoints map one to one
after two changes: drop the derived buffers `attn.biases` and `attn.relative_position_index`
(here the offsets and the gather index are computed from the group shape on each call), and
rename `layers.{i}.downsample.reductions.*` (official PatchMerging) to
`layers.{i}.downsample.projs.*` (one CrossScaleEmbedding class serves both the patch embedding
and the merging).

Every attention of a forward is one kernel call: the tokens are permuted into group-major order
once, the groups are the kernel's batch, and the position bias is its float mask [heads, N, N],
broadcast over the groups (its gradient comes back summed over them).
"""

import functools

import torch
from torch import nn

from .._attention import _int
from ._blocks import Mlp, attention, check_divides, check_tokens, merge_heads

KINDS = ("sda", "lda")
NORMS = ("after", "before")


def _positive(value, arg):
    """value as an int >= 1; TypeError / ValueError naming `arg` otherwise."""
    value = _int(value, arg)
    if value < 1:
        raise ValueError(f"{arg}: must be >= 1, got {value}")
    return value


def _ints(values, arg, length=None):
    """values as a list of ints >= 1 (of `length` when given), naming `arg[i]` in errors."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{arg}: expected a list of ints, got {type(values).__name__}")
    if length is not None and len(values) != length:
        raise ValueError(f"{arg}: expected {length} values, got {len(values)}")
    return [_positive(v, f"{arg}[{i}]") for i, v in enumerate(values)]


def _map_size(x, H, W):
    """Checks that H·W is x's token count; returns (H, W) as ints."""
    H, W = _positive(H, "H"), _positive(W, "W")
    if H * W != x.shape[1]:
        raise ValueError(f"H, W: a {H}x{W} map has {H * W} tokens, x has {x.shape[1]}")
    return H, W


class CrossScaleEmbedding(nn.Module):
    """The cross-scale embedding layer: convolutions of several kernel sizes, one stride, centred
    on the same points (padding (k - stride) // 2), their outputs concatenated along channels.

    Conv i gives dim // 2**(i+1) channels, the last dim // 2**(n-1) (96 with kernels [4, 8, 16, 32]
    -> 48, 24, 12, 12): the larger kernels, which cost more, get fewer. The official code lists
    the kernels ascending; any order works here.

    norm="after": LayerNorm(dim) on the output (official PatchEmbed, stage 1's embedding);
    norm="before": LayerNorm(in_channels) on the input (official PatchMerging, between stages).

    forward(x) takes images [B, in_channels, H, W]; forward_tokens(x, H, W) takes a stage's tokens
    [B, H·W, in_channels] in row-major map order. Both return tokens [B, H'·W', dim] (row-major
    over the output map, whose size output_size(H, W) gives).
    """

    def __init__(self, in_channels, dim, kernel_sizes, stride, norm="after"):
        super().__init__()
        in_channels, dim = _positive(in_channels, "in_channels"), _positive(dim, "dim")
        stride = _positive(stride, "stride")
        kernels = _ints(kernel_sizes, "kernel_sizes")
        if not kernels:
            raise ValueError("kernel_sizes: expected at least one kernel size, got none")
        for i, k in enumerate(kernels):
            if k < stride:  # a negative padding: the kernels would skip input pixels
                raise ValueError(f"kernel_sizes[{i}]: {k} is smaller than the stride {stride}")
        n = len(kernels)
        if dim % 2 ** (n - 1) != 0:
            raise ValueError(f"dim: {dim} is not divisible by 2**{n - 1} = {2 ** (n - 1)}, which "
                             f"{n} kernel sizes need")
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {', '.join(NORMS)}, got {norm!r}")
        self.config = dict(in_channels=in_channels, dim=dim, kernel_sizes=kernels, stride=stride,
                           norm=norm)
        self.in_channels, self.dim = in_channels, dim
        self.kernel_sizes, self.stride = kernels, stride
        self.norm_before = norm == "before"
        dims = [dim // 2 ** (i + 1) for i in range(n - 1)] + [dim // 2 ** (n - 1)]
        self.projs = nn.ModuleList(
            nn.Conv2d(in_channels, d, kernel_size=k, stride=stride, padding=(k - stride) // 2)
            for d, k in zip(dims, kernels))
        self.norm = nn.LayerNorm(in_channels if self.norm_before else dim)

    def output_size(self, H, W):
        """The output map's size for an H x W input; ValueError when the convolutions disagree
        (kernels whose k - stride differ in parity) or the input is smaller than a kernel."""
        sizes = []
        for k in self.kernel_sizes:
            p = (k - self.stride) // 2
            if H + 2 * p < k or W + 2 * p < k:
                raise ValueError(f"H, W: a {H}x{W} map is smaller than kernel {k} (padding {p})")
            sizes.append(((H + 2 * p - k) // self.stride + 1, (W + 2 * p - k) // self.stride + 1))
        if len(set(sizes)) > 1:
            raise ValueError(f"kernel_sizes: {self.kernel_sizes} give maps of different sizes "
                             f"{['x'.join(map(str, s)) for s in sizes]} from a {H}x{W} input")
        return sizes[0]

    def forward(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected images [batch, {self.in_channels}, height, width], got "
                             f"{list(x.shape)}")
        self.output_size(x.shape[2], x.shape[3])
        if self.norm_before:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self._embed(x)

    def forward_tokens(self, x, H, W):
        check_tokens(x, "x", self.in_channels)
        H, W = _map_size(x, H, W)
        self.output_size(H, W)
        if self.norm_before:
            x = self.norm(x)
        return self._embed(x.reshape(x.shape[0], H, W, self.in_channels).permute(0, 3, 1, 2))

    def _embed(self, images):
        tokens = torch.cat([proj(images).flatten(2) for proj in self.projs], dim=1).transpose(1, 2)
        return tokens if self.norm_before else self.norm(tokens)


@functools.lru_cache(maxsize=64)
def _offsets_and_index(group_h, group_w):
    """The (2Gh-1)(2Gw-1) distinct offsets (Δi, Δj) within a Gh x Gw group (Δi outer, from
    1 - Gh to Gh - 1), and for each pair of tokens a = (ai, aj), b = (bi, bj) (row-major) the
    row of offset (ai - bi, aj - bj): index [N, N]. Shared, never modified."""
    di = torch.arange(1 - group_h, group_h)
    dj = torch.arange(1 - group_w, group_w)
    offsets = torch.stack(torch.meshgrid(di, dj, indexing="ij"), dim=-1).reshape(-1, 2).float()
    i = torch.arange(group_h).repeat_interleave(group_w)
    j = torch.arange(group_w).repeat(group_h)
    index = (i[:, None] - i[None, :] + group_h - 1) * (2 * group_w - 1) + (j[:, None] - j[None, :]
                                                                          + group_w - 1)
    return offsets, index


class DynamicPositionBias(nn.Module):
    """The dynamic position bias: an MLP maps a pair's offset (Δi, Δj) to one bias per head,

        pos3(pos2(pos1(pos_proj(Δ))))     pos_k = Sequential(LayerNorm, ReLU, Linear)

    of width pos_dim = dim // 4. LSDA builds it with dim = its own dim // 4, as the official code
    does, so an LSDA of width 96 has pos_dim 96 // 16 = 6.

    forward(group_h, group_w) -> bias [num_heads, N, N] (N = group_h·group_w, tokens row-major):
    the MLP runs once on the distinct offsets and its rows are gathered per pair (autograd scatters
    their gradients back).
    """

    def __init__(self, dim, num_heads):
        super().__init__()
        dim, num_heads = _positive(dim, "dim"), _positive(num_heads, "num_heads")
        if dim // 4 < 1:
            raise ValueError(f"dim: the position MLP's width is dim // 4, which must be >= 1, got "
                             f"dim = {dim}")
        self.config = dict(dim=dim, num_heads=num_heads)
        pos_dim = dim // 4
        self.pos_proj = nn.Linear(2, pos_dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, num_heads))

    def table(self, group_h, group_w):
        """The MLP on every distinct offset: [(2Gh-1)(2Gw-1), num_heads]."""
        offsets, _ = _offsets_and_index(_positive(group_h, "group_h"),
                                        _positive(group_w, "group_w"))
        offsets = offsets.to(self.pos_proj.weight.dtype)
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))

    def forward(self, group_h, group_w):
        table = self.table(group_h, group_w)
        _, index = _offsets_and_index(group_h, group_w)
        return table.t()[:, index]  # [heads, N, N], contiguous


class LSDA(nn.Module):
    """Long short distance attention: multi-head self-attention within groups of a map's tokens.

    x [B, H·W, dim] (row-major map order) -> [B, H·W, dim].
    - kind="sda" (short distance): G x G windows; token (i, j) is in group (i // G, j // G) at
      (i % G, j % G). H and W must be multiples of G = group_size.
    - kind="lda" (long distance): tokens `interval` apart; token (i, j) is in group
      (i % I, j % I) at (i // I, j // I), a group of (H/I) x (W/I). H and W must be multiples of
      I = interval.
    Within a group: softmax(q kᵀ · head_dim^-0.5 + B) v per head, B = DynamicPositionBias(dim // 4)
    on the group's offsets (position_bias), then proj. qkv is one Linear, split as
    [N, 3, heads, head_dim] (timm's and the official layout).
    """

    def __init__(self, dim, num_heads, group_size, interval, kind="sda", position_bias=True,
                 qkv_bias=True):
        super().__init__()
        dim, num_heads = _positive(dim, "dim"), _positive(num_heads, "num_heads")
        group_size, interval = _positive(group_size, "group_size"), _positive(interval, "interval")
        check_divides(num_heads, dim, "num_heads")
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        if position_bias and dim // 16 < 1:
            raise ValueError(f"dim: the position bias's width is dim // 16, which must be >= 1, "
                             f"got dim = {dim} (or pass position_bias=False)")
        self.config = dict(dim=dim, num_heads=num_heads, group_size=group_size, interval=interval,
                           kind=kind, position_bias=bool(position_bias), qkv_bias=bool(qkv_bias))
        self.dim, self.num_heads, self.kind = dim, num_heads, kind
        self.group_size, self.interval = group_size, interval
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pos = DynamicPositionBias(dim // 4, num_heads) if position_bias else None

    def group_shape(self, H, W):
        """(Gh, Gw) of the groups of an H x W map; ValueError when the map does not split."""
        step = self.group_size if self.kind == "sda" else self.interval
        name = "group_size" if self.kind == "sda" else "interval"
        if H % step or W % step:
            raise ValueError(f"H, W: {self.kind.upper()} needs map sides that are multiples of "
                             f"{name} = {step}, got {H}x{W}")
        return (step, step) if self.kind == "sda" else (H // step, W // step)

    def group(self, x, H, W):
        """x [B, H·W, C] in group-major order: ([B·nG, N, C], the split's shape for ungroup).
        [B, H, W, C] is split as rows (r, a) and columns (s, b), a and b within the group:
        SDA rows i = r·G + a, group (r, s); LDA rows i = a·I + r, group (r, s)."""
        gh, gw = self.group_shape(H, W)
        B, C = x.shape[0], x.shape[2]
        if self.kind == "sda":
            split = x.reshape(B, H // gh, gh, W // gw, gw, C).permute(0, 1, 3, 2, 4, 5)
        else:
            split = x.reshape(B, gh, H // gh, gw, W // gw, C).permute(0, 2, 4, 1, 3, 5)
        return split.reshape(-1, gh * gw, C), split.shape  # the one copy in

    def ungroup(self, groups, shape):
        """group's inverse: [B·nG, N, C] back to [B, H·W, C] in map order."""
        B, C = shape[0], shape[-1]
        order = (0, 1, 3, 2, 4, 5) if self.kind == "sda" else (0, 3, 1, 4, 2, 5)
        return groups.view(shape).permute(*order).reshape(B, -1, C)

    def forward(self, x, H, W):
        check_tokens(x, "x", self.dim)
        H, W = _map_size(x, H, W)
        gh, gw = self.group_shape(H, W)
        C, heads = self.dim, self.num_heads
        groups, shape = self.group(x, H, W)
        n, N = groups.shape[:2]
        qkv = self.qkv(groups).view(n, N, 3, heads, C // heads)
        # [B·nG, heads, N, D] views; unbind, not indexing: its backward stacks the three
        # gradients into one tensor, where each index's would zero-fill a copy of all of qkv.
        q, k, v = (x.transpose(1, 2) for x in qkv.unbind(2))
        bias = self.pos(gh, gw) if self.pos is not None else None   # [heads, N, N], broadcast
        out = self.proj(merge_heads(attention(q, k, v, mask=bias, scale=(C // heads) ** -0.5)))
        return self.ungroup(out, shape)


class CrossFormerBlock(nn.Module):
    """x + attn(norm1(x), H, W), then + mlp(norm2(x)); attn an LSDA with the position bias."""

    def __init__(self, dim, num_heads, group_size, interval, kind, mlp_ratio=4.0, qkv_bias=True):
        super().__init__()
        attn = LSDA(dim, num_heads, group_size, interval, kind, True, qkv_bias)  # checks them
        self.config = dict(dim=attn.dim, num_heads=attn.num_heads, group_size=attn.group_size,
                           interval=attn.interval, kind=kind, mlp_ratio=float(mlp_ratio),
                           qkv_bias=bool(qkv_bias))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, H, W):
        check_tokens(x, "x", self.attn.dim)
        H, W = _map_size(x, H, W)
        self.attn.group_shape(H, W)
        x = x + self.attn(self.norm1(x), H, W)
        return x + self.mlp(self.norm2(x))


def stage_plan(H, W, depth, group_size, interval):
    """The official rule for one stage's blocks on an H x W map: (kind, group_size) per block,
    SDA for even blocks and LDA for odd ones; a map no larger than a group (min(H, W) <= G) is
    one SDA group per block, G = min(H, W)."""
    if min(H, W) <= group_size:
        return [("sda", min(H, W))] * depth
    return [("sda", group_size) if j % 2 == 0 else ("lda", group_size) for j in range(depth)]


class Stage(nn.Module):
    """One stage: its blocks on an H x W map, then (all but the last) the merging embedding."""

    def __init__(self, dim, depth, num_heads, group_size, interval, mlp_ratio, qkv_bias, plan,
                 merge):
        super().__init__()
        self.blocks = nn.ModuleList(
            CrossFormerBlock(dim, num_heads, g, interval, kind, mlp_ratio, qkv_bias)
            for kind, g in plan)
        self.downsample = (CrossScaleEmbedding(dim, 2 * dim, merge, 2, "before")
                           if merge is not None else None)


class CrossFormer(nn.Module):
    """The CrossFormer classifier: images [B, in_chans, *img_size] -> logits [B, num_classes].

    Stage i works at width embed_dim·2^i on a map 2^i times smaller than the patch embedding's
    (stride patch_size[0]); its blocks alternate SDA (group_size[i]) and LDA (crs_interval[i]),
    see stage_plan; between stages a CrossScaleEmbedding with merge_size[i] kernels and stride 2
    halves the map and doubles the width. The logits are head(mean over tokens of norm(x)).
    The defaults are CrossFormer-S's. img_size is an int (square) or (H, W); the images must
    have that size, since each stage's grouping depends on its map size.
    """

    def __init__(self, img_size=224, patch_size=(4, 8, 16, 32), in_chans=3, num_classes=1000,
                 embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                 group_size=(7, 7, 7, 7), crs_interval=(8, 4, 2, 1), mlp_ratio=4.0,
                 qkv_bias=True, merge_size=((2, 4), (2, 4), (2, 4))):
        super().__init__()
        if isinstance(img_size, (list, tuple)):
            img = _ints(img_size, "img_size", 2)
        else:
            img = [_positive(img_size, "img_size")] * 2
        depths = _ints(depths, "depths")
        stages = len(depths)
        if stages < 1:
            raise ValueError("depths: expected at least one stage, got none")
        num_heads = _ints(num_heads, "num_heads", stages)
        group_size = _ints(group_size, "group_size", stages)
        crs_interval = _ints(crs_interval, "crs_interval", stages)
        if not isinstance(merge_size, (list, tuple)) or len(merge_size) != stages - 1:
            raise ValueError(f"merge_size: expected {stages - 1} lists of kernel sizes (one per "
                             f"stage but the last), got {merge_size!r}")
        merge = [_ints(m, f"merge_size[{i}]") for i, m in enumerate(merge_size)]
        in_chans = _positive(in_chans, "in_chans")
        num_classes = _positive(num_classes, "num_classes")
        self.config = dict(img_size=img, patch_size=_ints(patch_size, "patch_size"),
                           in_chans=in_chans, num_classes=num_classes,
                           embed_dim=_positive(embed_dim, "embed_dim"), depths=depths,
                           num_heads=num_heads, group_size=group_size, crs_interval=crs_interval,
                           mlp_ratio=float(mlp_ratio), qkv_bias=bool(qkv_bias), merge_size=merge)
        self.img_size, self.in_chans = tuple(img), in_chans
        self.patch_embed = CrossScaleEmbedding(in_chans, embed_dim, self.config["patch_size"],
                                               self.config["patch_size"][0], "after")
        H, W = self._size(self.patch_embed, *img, "img_size")
        self.layers = nn.ModuleList()
        for i in range(stages):
            dim = embed_dim * 2 ** i
            check_divides(num_heads[i], dim, f"num_heads[{i}]")
            plan = stage_plan(H, W, depths[i], group_size[i], crs_interval[i])
            for kind, g in plan:
                step = g if kind == "sda" else crs_interval[i]
                if H % step or W % step:
                    name = f"group_size[{i}]" if kind == "sda" else f"crs_interval[{i}]"
                    raise ValueError(f"img_size: stage {i}'s {H}x{W} map does not split into "
                                     f"{kind.upper()} groups of {name} = {step}")
            stage = Stage(dim, depths[i], num_heads[i], group_size[i], crs_interval[i], mlp_ratio,
                          qkv_bias, plan, merge[i] if i < stages - 1 else None)
            self.layers.append(stage)
            if stage.downsample is not None:
                H, W = self._size(stage.downsample, H, W, "img_size")
        final = embed_dim * 2 ** (stages - 1)
        self.norm = nn.LayerNorm(final)
        self.head = nn.Linear(final, num_classes)

    @staticmethod
    def _size(embedding, H, W, arg):
        try:
            return embedding.output_size(H, W)
        except ValueError as e:
            raise ValueError(f"{arg}: {e}") from None

    def forward(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        H, W = self.img_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_chans, H, W):
            raise ValueError(f"x: expected images [batch, {self.in_chans}, {H}, {W}], got "
                             f"{list(x.shape)}")
        H, W = self.patch_embed.output_size(H, W)
        x = self.patch_embed(x)
        for stage in self.layers:
            for block in stage.blocks:
                x = block(x, H, W)
            if stage.downsample is not None:
                x = stage.downsample.forward_tokens(x, H, W)
                H, W = stage.downsample.output_size(H, W)
        return self.head(self.norm(x).mean(dim=1))


MODULES = (CrossScaleEmbedding, DynamicPositionBias, LSDA, CrossFormerBlock, CrossFormer)
