"""Float64 references for xattn.models, written in plain torch from the papers' equations (CrossViT,
Chen, Fan and Panda 2021; Perceiver IO, Jaegle et al. 2021) and the modules' docstrings. They never
call xattn or the modules: every function takes a dict of float64 tensors named as the module's
state_dict() (see `leaves`) and float64 inputs, and spells the math out, so torch autograd through
them gives the reference gradients.
"""

import math

import torch
import torch.nn.functional as F

CROSSVIT_EPS = 1e-6    # timm's CrossViT LayerNorms
PERCEIVER_EPS = 1e-5   # torch's default, as Perceiver IO uses


def leaves(state):
    """A module's state_dict() as float64 leaf tensors requiring grad (the reference parameters)."""
    return {name: t.detach().to(torch.float64).clone().requires_grad_()
            for name, t in state.items()}


# --- the pieces ---------------------------------------------------------------------------------

def layer_norm(x, weight, bias, eps):
    """(x - mean) / sqrt(biased variance + eps) * weight + bias over the last dim."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu(x):
    """The exact GELU: x * Phi(x) = x / 2 * (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def linear(x, weight, bias=None):
    """x @ W^T + b."""
    y = x @ weight.transpose(0, 1)
    return y if bias is None else y + bias


def heads_of(x, heads):
    """[B, L, H*D] -> [B, H, L, D], head h owning features h*D .. h*D + D - 1."""
    batch, length, width = x.shape
    return x.reshape(batch, length, heads, width // heads).permute(0, 2, 1, 3)


def concat_heads(x):
    """[B, H, L, D] -> [B, L, H*D]."""
    batch, heads, length, dim = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch, length, heads * dim)


def softmax_attention(q, k, v, scale, key_lens=None):
    """softmax(q @ k^T * scale + mask) @ v per head; q [B, H, L, D], k [B, H, S, D],
    v [B, H, S, Dv].

    key_lens[b]: keys j >= key_lens[b] get score -inf for batch row b. A row that sees no key at
    all has output 0 (its weights are all 0, not NaN)."""
    s = q @ k.transpose(-1, -2) * scale
    if key_lens is not None:
        j = torch.arange(k.shape[2]).view(1, -1)
        hidden = j >= torch.tensor(list(key_lens)).view(-1, 1)          # [B, S]
        s = s.masked_fill(hidden[:, None, None, :], -math.inf)
    m = s.amax(dim=-1, keepdim=True).detach()  # any shift cancels: only for range
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)                                                # 0 where masked
    total = p.sum(dim=-1, keepdim=True)
    p = p / torch.where(total > 0, total, torch.ones_like(total))       # all 0 on an empty row
    return p @ v


def mlp(P, prefix, x):
    """fc2(gelu(fc1(x)))."""
    h = gelu(linear(x, P[prefix + "fc1.weight"], P[prefix + "fc1.bias"]))
    return linear(h, P[prefix + "fc2.weight"], P[prefix + "fc2.bias"])


def norm(P, prefix, x, eps):
    return layer_norm(x, P[prefix + "weight"], P[prefix + "bias"], eps)


def self_attention(P, prefix, x, heads):
    """timm's ViT attention: qkv = x Wqkv^T + b, rows [0, C) of Wqkv are q, [C, 2C) k, [2C, 3C) v;
    proj(concat_h softmax(q_h k_h^T / sqrt(D)) v_h)."""
    width = x.shape[-1]
    w, b = P[prefix + "qkv.weight"], P.get(prefix + "qkv.bias")
    q, k, v = (linear(x, w[i * width:(i + 1) * width],
                      None if b is None else b[i * width:(i + 1) * width]) for i in range(3))
    a = softmax_attention(heads_of(q, heads), heads_of(k, heads), heads_of(v, heads),
                          (width // heads) ** -0.5)
    return linear(concat_heads(a), P[prefix + "proj.weight"], P[prefix + "proj.bias"])


def vit_block(P, prefix, x, heads, eps):
    """Pre-LN block: x + attn(LN1(x)), then + mlp(LN2(x))."""
    x = x + self_attention(P, prefix + "attn.", norm(P, prefix + "norm1.", x, eps), heads)
    return x + mlp(P, prefix + "mlp.", norm(P, prefix + "norm2.", x, eps))


# --- CrossViT ------------------------------------------------------------------------------------

def crossvit_cross_attention(P, x, heads, prefix=""):
    """timm's CrossAttention: the CLS token x[:, :1] queries all of x. x [B, N, C] -> [B, 1, C]:
    q = x[:, :1] Wq^T (+ bq), k = x Wk^T (+ bk), v = x Wv^T (+ bv),
    proj(concat_h softmax(q_h k_h^T * D^-0.5) v_h)."""
    width = x.shape[-1]
    q = linear(x[:, :1], P[prefix + "wq.weight"], P.get(prefix + "wq.bias"))
    k = linear(x, P[prefix + "wk.weight"], P.get(prefix + "wk.bias"))
    v = linear(x, P[prefix + "wv.weight"], P.get(prefix + "wv.bias"))
    a = softmax_attention(heads_of(q, heads), heads_of(k, heads), heads_of(v, heads),
                          (width // heads) ** -0.5)
    return linear(concat_heads(a), P[prefix + "proj.weight"], P[prefix + "proj.bias"])


def branch_projection(P, prefix, x):
    """f_i / g_i: Linear(GELU(LayerNorm(x))) (Sequential indices 0, 1, 2)."""
    h = gelu(norm(P, prefix + "0.", x, CROSSVIT_EPS))
    return linear(h, P[prefix + "2.weight"], P[prefix + "2.bias"])


def _patch_grid(tokens):
    """[B, g*g, C] patch tokens (row-major grid) -> [B, C, g, g]."""
    batch, count, width = tokens.shape
    side = math.isqrt(count)
    assert side * side == count
    return tokens.reshape(batch, side, side, width).permute(0, 3, 1, 2)


def crossvit_fusion(P, xs, dims, heads, scheme, prefix=""):
    """The paper's section 3.3 fusions of x0 [B, 1+N0, C0], x1 [B, 1+N1, C1] (CLS first)."""
    f = [lambda t, d=d: branch_projection(P, f"{prefix}projs.{d}.", t) for d in range(2)]
    g = [lambda t, d=d: branch_projection(P, f"{prefix}revert_projs.{d}.", t) for d in range(2)]
    cls = [x[:, :1] for x in xs]
    patches = [x[:, 1:] for x in xs]
    if scheme == "cross_attention":  # eq. 7-9, with the other branch's heads and width
        out = []
        for i in range(2):
            o = 1 - i
            c = f[i](cls[i])
            seq = torch.cat([c, patches[o]], dim=1)
            pre = f"{prefix}fusion.{i}."
            y = c + crossvit_cross_attention(
                P, norm(P, pre + "norm1.", seq, CROSSVIT_EPS), heads[o], pre + "attn.")
            out.append(torch.cat([g[i](y), patches[i]], dim=1))
        return out
    wide = 0 if dims[0] >= dims[1] else 1
    if scheme == "all_attention":  # eq. 2
        y = torch.cat([f[0](xs[0]), f[1](xs[1])], dim=1)
        o = y + self_attention(P, prefix + "fusion.attn.",
                               norm(P, prefix + "fusion.norm1.", y, CROSSVIT_EPS), heads[wide])
        n0 = xs[0].shape[1]
        return [g[0](o[:, :n0]), g[1](o[:, n0:])]
    if scheme == "class_token":  # eq. 3
        c = f[0](cls[0]) + f[1](cls[1])
        return [torch.cat([g[i](c), patches[i]], dim=1) for i in range(2)]
    if scheme == "pairwise":  # eq. 4, the other branch's grid resized bilinearly to one's own
        u = [f[i](xs[i]) for i in range(2)]
        c = u[0][:, :1] + u[1][:, :1]
        out = []
        for i in range(2):
            side = math.isqrt(patches[i].shape[1])
            other = F.interpolate(_patch_grid(u[1 - i][:, 1:]), size=(side, side),
                                  mode="bilinear", align_corners=False)
            other = other.permute(0, 2, 3, 1).reshape(other.shape[0], side * side, -1)
            out.append(g[i](torch.cat([c, u[i][:, 1:] + other], dim=1)))
        return out
    raise AssertionError(scheme)


def patch_embedding(images, weight, bias, patch):
    """Conv2d with kernel = stride = patch, written as cutting the image into p x p patches
    (row-major), flattening each as (channel, row, column) and multiplying by the flattened kernel:
    [B, C, S, S] -> [B, (S/p)^2, E]."""
    batch, chans, height, width = images.shape
    gh, gw = height // patch, width // patch
    cut = images.reshape(batch, chans, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5)
    flat = cut.reshape(batch, gh * gw, chans * patch * patch)
    return linear(flat, weight.reshape(weight.shape[0], -1), bias)


def crossvit(P, config, images):
    """The CrossViT classifier: images [B, C, H, W] -> logits [B, classes], the mean of both
    branches' heads on their LayerNormed CLS tokens."""
    xs = []
    for d in range(2):
        size, patch = config["img_size"][d], config["patch_size"][d]
        image = images
        if tuple(images.shape[2:]) != (size, size):
            image = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)
        tokens = patch_embedding(image, P[f"patch_embed.{d}.proj.weight"],
                                 P[f"patch_embed.{d}.proj.bias"], patch)
        cls = P[f"cls_token.{d}"].expand(images.shape[0], -1, -1)
        xs.append(torch.cat([cls, tokens], dim=1) + P[f"pos_embed.{d}"])
    dims, heads = config["embed_dim"], config["num_heads"]
    for k, stage in enumerate(config["depth"]):
        for d in range(2):
            for j in range(stage[d]):
                xs[d] = vit_block(P, f"blocks.{k}.blocks.{d}.{j}.", xs[d], heads[d], CROSSVIT_EPS)
        xs = crossvit_fusion(P, xs, dims, heads, config["fusion"], f"blocks.{k}.")
    logits = [linear(norm(P, f"norm.{d}.", xs[d][:, 0], CROSSVIT_EPS),
                     P[f"head.{d}.weight"], P[f"head.{d}.bias"]) for d in range(2)]
    return (logits[0] + logits[1]) / 2


# --- Perceiver IO --------------------------------------------------------------------------------

def perceiver_cross_block(P, prefix, x, context, heads, key_lens=None):
    """x + out_proj(attn(q_proj(LN_q(x)), k_proj(LN_kv(c)), v_proj(LN_kv(c)))), then
    + mlp(LN2(x)); keys j >= key_lens[b] are invisible to batch row b."""
    eps = PERCEIVER_EPS
    hx = norm(P, prefix + "norm_q.", x, eps)
    hc = norm(P, prefix + "norm_kv.", context, eps)
    a = prefix + "attn."
    q = linear(hx, P[a + "q_proj.weight"], P[a + "q_proj.bias"])
    k = linear(hc, P[a + "k_proj.weight"], P[a + "k_proj.bias"])
    v = linear(hc, P[a + "v_proj.weight"], P[a + "v_proj.bias"])
    width = q.shape[-1]
    att = softmax_attention(heads_of(q, heads), heads_of(k, heads), heads_of(v, heads),
                            (width // heads) ** -0.5, key_lens)
    x = x + linear(concat_heads(att), P[a + "out_proj.weight"], P[a + "out_proj.bias"])
    return x + mlp(P, prefix + "mlp.", norm(P, prefix + "norm2.", x, eps))


def perceiver_encode(P, config, inputs, input_lens=None):
    latents = P["latents"].unsqueeze(0).expand(inputs.shape[0], -1, -1)
    return perceiver_cross_block(P, "encoder.", latents, inputs, config["num_cross_heads"],
                                 input_lens)


def perceiver_process(P, config, latents):
    for i in range(config["num_self_layers"]):
        latents = vit_block(P, f"processor.{i}.", latents, config["num_latent_heads"],
                            PERCEIVER_EPS)
    return latents


def perceiver_decode(P, config, latents, queries):
    y = perceiver_cross_block(P, "decoder.", queries, latents, config["num_cross_heads"])
    return linear(y, P["output.weight"], P["output.bias"])


def perceiver(P, config, inputs, queries, input_lens=None):
    latents = perceiver_process(P, config, perceiver_encode(P, config, inputs, input_lens))
    return perceiver_decode(P, config, latents, queries)


# --- the test harness: a module (a black box) against a reference function ------------------------

REL = 1e-5
OBSERVED = []  # (label, forward error, worst gradient error, its name), relative, for reports


def randomize(module, seed, scale=0.5, tokens=0.02):
    """Redraws every parameter of module from a fixed seed, close to the modules' own
    initialisation: Linear and Conv2d weights N(0, scale^2 / fan_in) (torch's default draws
    std 0.58 / sqrt(fan_in), timm's 0.02), biases N(0, 0.1^2), LayerNorm weights 1 + N(0, 0.1^2)
    (not 1 and 0, so that a swapped or missing weight or bias shows), and the learned tokens
    (cls_token, pos_embed, latents) N(0, tokens^2) (0.02: their trunc_normal init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if name.endswith("bias"):
                p.copy_(0.1 * r)
            elif name.endswith("weight") and p.dim() == 1:
                p.copy_(1.0 + 0.1 * r)
            elif name.endswith("weight"):
                p.copy_(scale * r / math.sqrt(p[0].numel()))
            else:
                p.copy_(tokens * r)
    return module


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _rel(got, want):
    return (got.double() - want).abs().max().item() / want.abs().max().item()


def check_against_reference(module, run_module, run_reference, inputs, seed, zero_grads=(),
                            label=""):
    """Checks run_module(module, *inputs) (float32) against run_reference(P, *inputs64) (float64,
    P = leaves(module.state_dict())) and the gradients of sum(out * g) for one fixed random
    cotangent g per output, w.r.t. every parameter and every input:
    max|got - want| <= REL * max|want|.

    zero_grads: the parameters whose gradient is 0 in exact arithmetic (a key bias adds the same
    q.b to every score of a row, which the softmax cancels). Their reference gradient is rounding
    noise of no scale of its own, so it cannot be a relative yardstick: both it and the module's
    gradient (None, when the module never uses the parameter) must instead be negligible,
    <= REL times the largest gradient of any parameter."""
    leaves_in = [x.detach().clone().requires_grad_() for x in inputs]
    out = run_module(module, *leaves_in)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    cot = [randn(*o.shape, seed=seed + 1000 + i) for i, o in enumerate(outs)]
    for p in module.parameters():
        p.grad = None
    sum((o * c).sum() for o, c in zip(outs, cot)).backward()

    P = leaves(module.state_dict())
    assert sorted(P) == sorted(n for n, _ in module.named_parameters())
    inputs64 = [x.detach().double().requires_grad_() for x in inputs]
    want = run_reference(P, *inputs64)
    wants = list(want) if isinstance(want, (list, tuple)) else [want]
    sum((w * c.double()).sum() for w, c in zip(wants, cot)).backward()

    assert len(outs) == len(wants)
    fwd = 0.0
    for o, w in zip(outs, wants):
        assert o.dtype == torch.float32 and o.shape == w.shape
        err = _rel(o.detach(), w.detach())
        assert err <= REL, f"{label} output: relative error {err:.2e}"
        fwd = max(fwd, err)

    params = dict(module.named_parameters())
    largest = max(P[n].grad.abs().max().item() for n in P
                  if n not in zero_grads and P[n].grad is not None)
    worst = (0.0, "")
    for name, p in params.items():
        want_grad = P[name].grad
        if want_grad is None:  # a parameter the computation does not use (encode: the decoder's)
            assert p.grad is None, f"{label} {name}: a gradient for an unused parameter"
            continue
        if name in zero_grads:
            assert want_grad.abs().max().item() <= REL * largest, name
            assert p.grad is None or p.grad.abs().max().item() <= REL * largest, name
            continue
        assert p.grad is not None, f"{label} {name}: no gradient"
        err = _rel(p.grad, want_grad)
        assert err <= REL, f"{label} {name}: relative gradient error {err:.2e}"
        worst = max(worst, (err, name))
    for i, (x, x64) in enumerate(zip(leaves_in, inputs64)):
        err = _rel(x.grad, x64.grad)
        assert err <= REL, f"{label} input {i}: relative gradient error {err:.2e}"
        worst = max(worst, (err, f"input {i}"))
    OBSERVED.append((label, fwd) + worst)
    return fwd, worst
