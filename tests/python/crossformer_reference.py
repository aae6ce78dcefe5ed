"""Float64 references for xattn.models' CrossFormer modules (Wang et al., ICLR 2022), written in
plain torch from the paper's definitions and the official code's conventions. They never call
xattn or the modules: the groups are listed token by token from the SDA / LDA rules and attended
one at a time with a dense softmax, the position bias is the MLP applied to each pair's own offset,
and the convolutions are torch.nn.functional.conv2d. P holds float64 tensors named as the module's
state_dict() (models_reference.leaves), so autograd through these gives the reference gradients.
"""

import torch
import torch.nn.functional as F

from models_reference import concat_heads, heads_of, layer_norm, linear, mlp

EPS = 1e-5  # the official code's nn.LayerNorm default


def norm(P, prefix, x):
    return layer_norm(x, P[prefix + "weight"], P[prefix + "bias"], EPS)


def tokens_to_images(x, H, W):
    """[B, H·W, C], token i·W + j at (i, j) -> [B, C, H, W]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], H, W)


def cross_scale_embedding(P, prefix, images, kernels, stride, where):
    """The CEL on images [B, C, H, W]: conv i (kernel k_i, padding (k_i - stride) / 2, rounded
    down), outputs concatenated along channels, each output pixel one token (row-major); LayerNorm
    over the input's channels (where="before") or the output's (where="after").
    Returns (tokens [B, H'·W', dim], (H', W'))."""
    if where == "before":
        images = norm(P, prefix + "norm.", images.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    maps = [F.conv2d(images, P[f"{prefix}projs.{i}.weight"], P[f"{prefix}projs.{i}.bias"],
                     stride=stride, padding=(k - stride) // 2) for i, k in enumerate(kernels)]
    y = torch.cat(maps, dim=1)
    batch, dim, H, W = y.shape
    tokens = y.permute(0, 2, 3, 1).reshape(batch, H * W, dim)
    if where == "after":
        tokens = norm(P, prefix + "norm.", tokens)
    return tokens, (H, W)


def position_mlp(P, prefix, offsets):
    """DPB's MLP on offsets [..., 2]: pos3(pos2(pos1(pos_proj(d)))), pos_k = LN, ReLU, Linear."""
    h = linear(offsets, P[prefix + "pos_proj.weight"], P[prefix + "pos_proj.bias"])
    for k in (1, 2, 3):
        h = torch.relu(norm(P, f"{prefix}pos{k}.0.", h))
        h = linear(h, P[f"{prefix}pos{k}.2.weight"], P[f"{prefix}pos{k}.2.bias"])
    return h


def position_bias(P, prefix, group_h, group_w):
    """[heads, N, N]: for tokens p = (pi, pj), q = (qi, qj) of a group_h x group_w group
    (row-major), the MLP of (pi - qi, pj - qj), computed pair by pair."""
    coords = [(a, b) for a in range(group_h) for b in range(group_w)]
    n = len(coords)
    offsets = torch.tensor([[p[0] - q[0], p[1] - q[1]] for p in coords for q in coords],
                           dtype=P[prefix + "pos_proj.weight"].dtype)
    return position_mlp(P, prefix, offsets).reshape(n, n, -1).permute(2, 0, 1)


def lsda_groups(H, W, kind, group_size, interval):
    """Each group's members as token indices (row-major map), in group order (row-major group
    coordinates), and the group's shape.
    SDA: group (gi, gj) holds the tokens (gi·G + a, gj·G + b), a, b < G.
    LDA: group (r, s) holds the tokens (a·I + r, b·I + s), a < H/I, b < W/I."""
    if kind == "sda":
        G = group_size
        groups = [[(gi * G + a) * W + gj * G + b for a in range(G) for b in range(G)]
                  for gi in range(H // G) for gj in range(W // G)]
        return groups, (G, G)
    I = interval
    groups = [[(a * I + r) * W + b * I + s for a in range(H // I) for b in range(W // I)]
              for r in range(I) for s in range(I)]
    return groups, (H // I, W // I)


def lsda(P, prefix, x, H, W, heads, kind, group_size, interval, with_bias=True, given=None):
    """Self-attention within each group, one group at a time: per head
    softmax(q kᵀ · D^-0.5 + bias) v, bias from DPB on the group's shape (or `given`, a
    [heads, N, N] tensor standing in for it); then proj."""
    batch, length, width = x.shape
    groups, (gh, gw) = lsda_groups(H, W, kind, group_size, interval)
    bias = 0.0
    if with_bias:
        bias = given if given is not None else position_bias(P, prefix + "pos.", gh, gw)
    w, b = P[prefix + "qkv.weight"], P.get(prefix + "qkv.bias")
    pieces, order = [], []
    for members in groups:
        xg = x[:, members]
        q, k, v = (heads_of(linear(xg, w[i * width:(i + 1) * width],
                                   None if b is None else b[i * width:(i + 1) * width]), heads)
                   for i in range(3))
        scores = q @ k.transpose(-1, -2) * (width // heads) ** -0.5 + bias
        a = torch.softmax(scores, dim=-1) @ v
        pieces.append(linear(concat_heads(a), P[prefix + "proj.weight"], P[prefix + "proj.bias"]))
        order += members
    assert sorted(order) == list(range(length))
    return torch.cat(pieces, dim=1)[:, torch.argsort(torch.tensor(order))]


def crossformer_block(P, prefix, x, H, W, heads, kind, group_size, interval, given=None):
    x = x + lsda(P, prefix + "attn.", norm(P, prefix + "norm1.", x), H, W, heads, kind,
                 group_size, interval, given=given)
    return x + mlp(P, prefix + "mlp.", norm(P, prefix + "norm2.", x))


def crossformer(P, config, images, given=None):
    """The classifier: CEL (stride patch_size[0]), stages of blocks (even: SDA, odd: LDA; when
    the map's short side is no longer than the group, SDA over the whole short side), CEL merges
    (stride 2, LayerNorm before), LayerNorm, mean over tokens, head. given: the blocks' position
    biases in order, standing in for their DPBs."""
    given = list(given) if given is not None else None
    kernels = config["patch_size"]
    x, (H, W) = cross_scale_embedding(P, "patch_embed.", images, kernels, kernels[0], "after")
    stages = len(config["depths"])
    for i in range(stages):
        G, I = config["group_size"][i], config["crs_interval"][i]
        for j in range(config["depths"][i]):
            if min(H, W) <= G:
                kind, g = "sda", min(H, W)
            else:
                kind, g = ("sda" if j % 2 == 0 else "lda"), G
            x = crossformer_block(P, f"layers.{i}.blocks.{j}.", x, H, W,
                                  config["num_heads"][i], kind, g, I,
                                  given.pop(0) if given is not None else None)
        if i < stages - 1:
            x, (H, W) = cross_scale_embedding(P, f"layers.{i}.downsample.",
                                              tokens_to_images(x, H, W),
                                              config["merge_size"][i], 2, "before")
    pooled = norm(P, "norm.", x).mean(dim=1)
    return linear(pooled, P["head.weight"], P["head.bias"])
