"""CrossViT (Chen, Fan and Panda, 2021): two ViT branches with different patch sizes that exchange
information through multi-scale fusion, the four fusion schemes of the paper's section 3.3.

Parameter names are timm's (timm.models.crossvit), so its checkpoints map one to one:
patch_embed.{i}.proj, cls_token.{i}, pos_embed.{i}, blocks.{k}.blocks.{i}.{j}.*,
blocks.{k}.projs.{i}.*, blocks.{k}.fusion.{i}.*, blocks.{k}.revert_projs.{i}.*, norm.{i}, head.{i}.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ._blocks import Block, SelfAttention, attention, check_divides, check_tokens, projection

SCHEMES = ("cross_attention", "all_attention", "class_token", "pairwise")
_EPS = 1e-6  # timm's CrossViT LayerNorms


class CrossViTCrossAttention(nn.Module):
    """The CLS token of x attends to all of x's tokens (itself and the other branch's patches):
    x [B, N, C] -> [B, 1, C], with timm's wq, wk, wv (C -> C) and proj.

        q = wq(x[:, :1]), k = wk(x), v = wv(x)
        out = proj(concat_h softmax(q_h k_hᵀ · D^-0.5) v_h)          (D = C / num_heads)

    With one query per head, the projections of all N tokens are what costs (2·N·C² against the
    attention's 4·N·C). They are reassociated instead: q_h·k_jᵀ = (q_h·Wk_h)·x_jᵀ + q_h·bk_h, whose
    last term is the same for every key and cancels in the softmax, and Σ_j p_j·v_j =
    (Σ_j p_j·x_j)·Wv_hᵀ + bv_h because the weights sum to 1. So one kernel call attends with the
    C-wide queries q_h·Wk_h over the raw tokens x, shared by all heads (grouped-query: one kv
    head), and only the H rows it returns are projected. The result is the same function (wk's
    bias has no effect, and so no gradient, in either form).
    """

    def __init__(self, dim, num_heads=8, qkv_bias=False):
        super().__init__()
        check_divides(num_heads, dim, "num_heads")
        self.config = dict(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.num_heads = num_heads
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        dim = self.wq.in_features
        check_tokens(x, "x", dim)
        batch, heads, head_dim = x.shape[0], self.num_heads, dim // self.num_heads
        q = self.wq(x[:, :1]).view(batch, heads, head_dim)
        q_keys = torch.einsum("bhd,hdc->bhc", q, self.wk.weight.view(heads, head_dim, dim))
        tokens = x.unsqueeze(1)  # [B, 1, N, C]: one kv head for all query heads
        mixed = attention(q_keys.unsqueeze(2), tokens, tokens, scale=head_dim ** -0.5)
        out = torch.einsum("bhc,hdc->bhd", mixed[:, :, 0], self.wv.weight.view(heads, head_dim, dim))
        if self.wv.bias is not None:
            out = out + self.wv.bias.view(heads, head_dim)
        return self.proj(out.reshape(batch, 1, dim))


class CrossAttentionBlock(nn.Module):
    """timm's fusion block: x[:, :1] + attn(norm1(x)) (no MLP)."""

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_EPS)
        self.attn = CrossViTCrossAttention(dim, num_heads, qkv_bias)

    def forward(self, x):
        return x[:, :1] + self.attn(self.norm1(x))


class AllAttentionBlock(nn.Module):
    """All-attention fusion's y + MSA(LN(y)) over both branches' tokens."""

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_EPS)
        self.attn = SelfAttention(dim, num_heads, qkv_bias)

    def forward(self, x):
        return x + self.attn(self.norm1(x))


def _pair(value, arg):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{arg}: CrossViT has two branches, got {len(value)} values")
        return tuple(value)
    return (value, value)


def _grid(tokens, arg):
    """The side of a square patch grid of tokens - 1 patches."""
    side = round((tokens - 1) ** 0.5)
    if side * side != tokens - 1:
        raise ValueError(f"{arg}: pairwise fusion needs a square patch grid, got {tokens - 1} "
                         "patch tokens")
    return side


class CrossViTFusion(nn.Module):
    """Multi-scale fusion of two branches' tokens xs = (x0 [B, 1+N0, C0], x1 [B, 1+N1, C1]), each
    led by its CLS token; returns the two fused lists, shaped as they came. With f_i, g_i the
    projections LayerNorm-GELU-Linear (timm's projs and revert_projs):

    - "cross_attention": the paper's choice (eq. 7-9). Branch i's CLS, projected to the other
      branch's width, attends over itself and the other branch's patches:
      y = f_i(cls_i) + CA(LN([f_i(cls_i) | patches_o])); z_i = [g_i(y) | patches_i].
    - "all_attention" (eq. 2): y = [f_0(x0) | f_1(x1)], o = y + MSA(LN(y)), z_i = g_i(o_i).
    - "class_token" (eq. 3): z_i = [g_i(f_0(cls_0) + f_1(cls_1)) | patches_i].
    - "pairwise" (eq. 4): the other branch's projected patch grid is resized to branch i's
      (bilinear, as torch.nn.functional.interpolate with align_corners=False) and added to its
      own position by position; the CLS tokens are summed: z_i = g_i([f_0(cls_0) + f_1(cls_1) |
      f_i(patches_i) + resize(f_o(patches_o))]). Needs square patch grids.

    The common width of the last three is the wider branch's, with that branch's heads.
    """

    def __init__(self, dims, num_heads, scheme="cross_attention", qkv_bias=True):
        super().__init__()
        dims, num_heads = _pair(dims, "dims"), _pair(num_heads, "num_heads")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme: expected one of {', '.join(SCHEMES)}, got {scheme!r}")
        for d in range(2):
            check_divides(num_heads[d], dims[d], f"num_heads[{d}]")
        self.config = dict(dims=list(dims), num_heads=list(num_heads), scheme=scheme,
                           qkv_bias=qkv_bias)
        self.dims, self.scheme = dims, scheme
        if scheme == "cross_attention":
            self.projs = nn.ModuleList(projection(dims[d], dims[1 - d]) for d in range(2))
            self.fusion = nn.ModuleList(CrossAttentionBlock(dims[1 - d], num_heads[1 - d], qkv_bias)
                                        for d in range(2))
            self.revert_projs = nn.ModuleList(projection(dims[1 - d], dims[d]) for d in range(2))
            return
        wide = 0 if dims[0] >= dims[1] else 1
        self.projs = nn.ModuleList(projection(dims[d], dims[wide]) for d in range(2))
        if scheme == "all_attention":
            self.fusion = AllAttentionBlock(dims[wide], num_heads[wide], qkv_bias)
        self.revert_projs = nn.ModuleList(projection(dims[wide], dims[d]) for d in range(2))

    def forward(self, xs):
        if not isinstance(xs, (list, tuple)) or len(xs) != 2:
            raise TypeError("xs: expected the two branches' token tensors")
        for d in range(2):
            check_tokens(xs[d], f"xs[{d}]", self.dims[d], xs[0].shape[0] if d else None)
            if xs[d].shape[1] < 1:
                raise ValueError(f"xs[{d}]: needs at least the CLS token")
        return getattr(self, "_" + self.scheme)(xs)

    def _cross_attention(self, xs):
        out = []
        for d in range(2):
            cls = self.projs[d](xs[d][:, :1])
            fused = self.fusion[d](torch.cat([cls, xs[1 - d][:, 1:]], dim=1))
            out.append(torch.cat([self.revert_projs[d](fused), xs[d][:, 1:]], dim=1))
        return out

    def _all_attention(self, xs):
        y = torch.cat([self.projs[d](xs[d]) for d in range(2)], dim=1)
        o = self.fusion(y)
        split = xs[0].shape[1]
        return [self.revert_projs[0](o[:, :split]), self.revert_projs[1](o[:, split:])]

    def _class_token(self, xs):
        cls = self.projs[0](xs[0][:, :1]) + self.projs[1](xs[1][:, :1])
        return [torch.cat([self.revert_projs[d](cls), xs[d][:, 1:]], dim=1) for d in range(2)]

    def _pairwise(self, xs):
        grids = [_grid(xs[d].shape[1], f"xs[{d}]") for d in range(2)]
        u = [self.projs[d](xs[d]) for d in range(2)]
        cls = u[0][:, :1] + u[1][:, :1]
        out = []
        for d in range(2):
            o = 1 - d
            other = u[o][:, 1:].transpose(1, 2).unflatten(2, (grids[o], grids[o]))
            other = F.interpolate(other, size=(grids[d], grids[d]), mode="bilinear",
                                  align_corners=False).flatten(2).transpose(1, 2)
            out.append(self.revert_projs[d](torch.cat([cls, u[d][:, 1:] + other], dim=1)))
        return out


class MultiScaleBlock(CrossViTFusion):
    """One multi-scale transformer encoder: each branch's ViT blocks, then the fusion."""

    def __init__(self, dims, depths, num_heads, mlp_ratio, scheme, qkv_bias=True):
        super().__init__(dims, num_heads, scheme, qkv_bias)
        heads, ratios = _pair(num_heads, "num_heads"), _pair(mlp_ratio, "mlp_ratio")
        self.blocks = nn.ModuleList(
            nn.Sequential(*[Block(self.dims[d], heads[d], ratios[d], qkv_bias, _EPS)
                            for _ in range(depths[d])]) for d in range(2))

    def forward(self, xs):
        return super().forward([self.blocks[d](xs[d]) for d in range(2)])


class PatchEmbed(nn.Module):
    """Non-overlapping patches of the image, linearly embedded: [B, C, S, S] -> [B, N, dim]."""

    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class CrossViT(nn.Module):
    """The CrossViT classifier: images [B, in_chans, H, W] -> logits [B, num_classes].

    Branch i resizes the image to img_size[i] (bicubic, as timm, when it differs), embeds its
    patch_size[i] patches, prepends its CLS token and adds its position embedding; `depth` lists
    the multi-scale encoders, each (blocks of branch 0, blocks of branch 1) followed by a fusion of
    the given scheme; the logits are the mean of both branches' heads on their normalized CLS.
    """

    def __init__(self, img_size=(240, 224), patch_size=(12, 16), in_chans=3, num_classes=1000,
                 embed_dim=(192, 384), depth=((1, 4), (1, 4), (1, 4)), num_heads=(6, 6),
                 mlp_ratio=(4.0, 4.0), qkv_bias=True, fusion="cross_attention"):
        super().__init__()
        img_size, patch_size = _pair(img_size, "img_size"), _pair(patch_size, "patch_size")
        embed_dim, num_heads = _pair(embed_dim, "embed_dim"), _pair(num_heads, "num_heads")
        mlp_ratio = _pair(mlp_ratio, "mlp_ratio")
        depth = [tuple(_pair(stage, "depth")) for stage in depth]
        for d in range(2):
            if img_size[d] % patch_size[d] != 0:
                raise ValueError(f"img_size[{d}]: {img_size[d]} is not a multiple of "
                                 f"patch_size[{d}] = {patch_size[d]}")
        if fusion not in SCHEMES:  # here: the stages would name it "scheme", or with none, accept it
            raise ValueError(f"fusion: expected one of {', '.join(SCHEMES)}, got {fusion!r}")
        self.config = dict(img_size=list(img_size), patch_size=list(patch_size),
                           in_chans=in_chans, num_classes=num_classes,
                           embed_dim=list(embed_dim), depth=[list(s) for s in depth],
                           num_heads=list(num_heads), mlp_ratio=list(mlp_ratio),
                           qkv_bias=qkv_bias, fusion=fusion)
        self.img_size, self.in_chans = img_size, in_chans
        patches = [(img_size[d] // patch_size[d]) ** 2 for d in range(2)]
        self.patch_embed = nn.ModuleList(
            PatchEmbed(img_size[d], patch_size[d], in_chans, embed_dim[d]) for d in range(2))
        self.cls_token = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1, embed_dim[d])) for d in range(2))
        self.pos_embed = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1 + patches[d], embed_dim[d])) for d in range(2))
        self.blocks = nn.ModuleList(MultiScaleBlock(embed_dim, stage, num_heads, mlp_ratio,
                                                    fusion, qkv_bias) for stage in depth)
        self.norm = nn.ModuleList(nn.LayerNorm(embed_dim[d], eps=_EPS) for d in range(2))
        self.head = nn.ModuleList(nn.Linear(embed_dim[d], num_classes) for d in range(2))
        for p in list(self.cls_token) + list(self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.in_chans or x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"x: expected images [batch, {self.in_chans}, height, width], got "
                             f"{list(x.shape)}")
        xs = []
        for d in range(2):
            size = self.img_size[d]
            image = x if tuple(x.shape[2:]) == (size, size) else F.interpolate(
                x, size=(size, size), mode="bicubic", align_corners=False)
            tokens = self.patch_embed[d](image)
            cls = self.cls_token[d].expand(x.shape[0], -1, -1)
            xs.append(torch.cat([cls, tokens], dim=1) + self.pos_embed[d])
        for block in self.blocks:
            xs = block(xs)
        logits = [self.head[d](self.norm[d](xs[d][:, 0])) for d in range(2)]
        return torch.stack(logits).mean(dim=0)
