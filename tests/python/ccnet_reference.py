"""Float64 reference for CCNet's criss-cross attention (Huang et al. 2019), in plain torch from the
paper's definition: the pixel u = (i, j) attends to the set Φ_u of the H + W - 1 pixels that share
its row or its column (u itself once), A = softmax over Φ_u of Q_u·K_φ, H'_u = Σ_φ A_u,φ·V_φ + H_u
(with the learned γ on the attention term). The row ∪ column set is an explicit [H·W, H·W]
visibility matrix: slow and obvious, for small maps. Never calls xattn."""

import math

import torch
import torch.nn.functional as F


def cross_visibility(height, width):
    """[H·W, H·W] bool: pixel u = i·W + j sees pixel v iff they share a row or a column."""
    i = torch.arange(height).repeat_interleave(width)
    j = torch.arange(width).repeat(height)
    return (i[:, None] == i[None, :]) | (j[:, None] == j[None, :])


def criss_cross(q, k, v, scale=1.0):
    """Channels-last maps q, k [B, H, W, D], v [B, H, W, Dv] -> [B, H, W, Dv]: dense attention of
    every pixel over its row ∪ column."""
    batch, height, width, _ = q.shape
    flat = [x.reshape(batch, height * width, x.shape[-1]) for x in (q, k, v)]
    s = flat[0] @ flat[1].transpose(1, 2) * scale
    s = s.masked_fill(~cross_visibility(height, width), -math.inf)
    return (torch.softmax(s, dim=-1) @ flat[2]).reshape(batch, height, width, -1)


def criss_cross_module(P, x, recurrence):
    """CrissCrossAttention: x [B, C, H, W] -> γ·CC(x) + x, `recurrence` times; the 1x1
    convolutions are F.conv2d with the state_dict's weights."""
    for _ in range(recurrence):
        q, k, v = (F.conv2d(x, P[f"{n}.weight"], P[f"{n}.bias"]).permute(0, 2, 3, 1)
                   for n in ("query_conv", "key_conv", "value_conv"))
        x = P["gamma"] * criss_cross(q, k, v).permute(0, 3, 1, 2) + x
    return x
