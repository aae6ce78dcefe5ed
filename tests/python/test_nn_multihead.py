"""xattn.nn.MultiheadAttention against torch.nn.MultiheadAttention run in float64: every
constructor option, every forward option, both batch layouts, unbatched inputs, caches."""

import copy
import itertools
import math
import random

import numpy as np
import pytest
import torch

import xattn
from xattn.nn import MultiheadAttention

REL = 1e-5  # the bound for float32, relative to the largest output magnitude


def randomize(module, seed):
    """Every parameter (biases and bias_k/v included) drawn non-zero, so each one matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


def causal_float(L, S):
    return torch.full((L, S), -math.inf, dtype=torch.float64).triu(1)


def as_float(mask):
    """torch's own conversion of a bool mask (True = masked) to an additive one."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=torch.float64).masked_fill(mask, -math.inf)
    return mask.double()


def reference(module, query, key, value, *, key_padding_mask=None, attn_mask=None,
              is_causal=False, need_weights=True, average_attn_weights=True):
    """torch's MultiheadAttention in float64. torch 1.13 has no is_causal and cannot merge a
    float padding mask into a float attention mask, so those are summed here, as torch 2 does."""
    m64 = copy.deepcopy(module).double()
    batched = query.dim() == 3
    L = query.shape[1 if module.batch_first and batched else 0]
    S = key.shape[1 if module.batch_first and batched else 0]
    N = query.shape[0 if module.batch_first else 1] if batched else 1
    H = module.num_heads
    kpm = key_padding_mask
    if is_causal or (kpm is not None and kpm.dtype != torch.bool and attn_mask is not None):
        total = torch.zeros(N * H if batched else H, L, S, dtype=torch.float64)
        if attn_mask is not None:
            total = total + as_float(attn_mask)
        if is_causal:
            total = total + causal_float(L, S)
        if kpm is not None:
            pad = as_float(kpm).reshape(N, 1, 1, S).expand(N, H, 1, S).reshape(-1, 1, S)
            total = total + (pad if batched else pad[0])
            kpm = None
        attn_mask = total
    elif attn_mask is not None and attn_mask.dtype != torch.bool:
        attn_mask = attn_mask.double()
    if kpm is not None and kpm.dtype != torch.bool:
        kpm = kpm.double()
    with torch.no_grad():
        return m64(query.double(), key.double(), value.double(), key_padding_mask=kpm,
                   need_weights=need_weights, attn_mask=attn_mask,
                   average_attn_weights=average_attn_weights)


def assert_close(got, want, rel=REL):
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == torch.float32
    scale = max(want.abs().max().item(), 1e-6)
    err = (got.double() - want).abs().max().item()
    assert err <= rel * scale, f"max error {err:.3g} > {rel} x {scale:.3g}"


def random_case(seed):
    r = random.Random(seed)
    heads = r.choice([1, 2, 4, 8])
    cfg = dict(embed_dim=heads * r.choice([4, 8, 16, 24]), num_heads=heads,
               bias=r.random() < 0.7, add_bias_kv=r.random() < 0.3,
               add_zero_attn=r.random() < 0.3, batch_first=r.random() < 0.5)
    if r.random() < 0.4:
        cfg.update(kdim=r.choice([5, 12, 40]), vdim=r.choice([7, 16, 33]))
    shape = dict(N=r.choice([1, 2, 3]), L=r.choice([1, 5, 17]), S=r.choice([1, 6, 23, 40]),
                 batched=r.random() < 0.85)
    opts = dict(need_weights=r.random() < 0.6, average_attn_weights=r.random() < 0.5,
                is_causal=r.random() < 0.25)
    opts["kpm"] = r.choice([None, "tail", "holes", "float"])
    opts["attn"] = r.choice([None, "2d_bool", "2d_float", "3d_bool", "3d_float"])
    return cfg, shape, opts


def make_masks(kind_kpm, kind_attn, N, H, L, S, batched, g):
    """Random masks that always leave key 0 visible (torch returns NaN for a row that sees no
    key; xattn returns zeros — a documented difference, tested separately)."""
    kpm = attn = None
    if kind_kpm == "tail":
        lens = torch.randint(1, S + 1, (N,), generator=g)
        kpm = torch.arange(S)[None, :] >= lens[:, None]
    elif kind_kpm == "holes":
        kpm = torch.rand(N, S, generator=g) < 0.4
        kpm[:, 0] = False
    elif kind_kpm == "float":
        kpm = torch.randn(N, S, generator=g)
        kpm[torch.rand(N, S, generator=g) < 0.3] = -math.inf
        kpm[:, 0] = 0.5
    if kpm is not None and not batched:
        kpm = kpm[0]
    if kind_attn is not None:
        lead = () if kind_attn.startswith("2d") else ((N if batched else 1) * H,)
        if kind_attn.endswith("bool"):
            attn = torch.rand(*lead, L, S, generator=g) < 0.4
            attn[..., 0] = False
        else:
            attn = torch.randn(*lead, L, S, generator=g)
            attn[torch.rand(*lead, L, S, generator=g) < 0.2] = -math.inf
            attn[..., 0] = 0.0
    return kpm, attn


def inputs(cfg, N, L, S, batched, g):
    E = cfg["embed_dim"]
    kdim, vdim = cfg.get("kdim", E), cfg.get("vdim", E)
    def seq(length, width):
        if not batched:
            return torch.randn(length, width, generator=g)
        return torch.randn(*((N, length) if cfg["batch_first"] else (length, N)), width,
                           generator=g)
    return seq(L, E), seq(S, kdim), seq(S, vdim)


@pytest.mark.parametrize("seed", range(60))
def test_random_configurations_match_torch(seed):
    cfg, shape, opts = random_case(seed)
    N, L, S, batched = shape["N"], shape["L"], shape["S"], shape["batched"]
    g = torch.Generator().manual_seed(1000 + seed)
    module = randomize(torch.nn.MultiheadAttention(**cfg), seed)
    q, k, v = inputs(cfg, N, L, S, batched, g)
    kpm, attn = make_masks(opts["kpm"], opts["attn"], N, cfg["num_heads"], L, S, batched, g)
    kwargs = dict(key_padding_mask=kpm, attn_mask=attn, is_causal=opts["is_causal"],
                  need_weights=opts["need_weights"],
                  average_attn_weights=opts["average_attn_weights"])
    want_out, want_w = reference(module, q, k, v, **kwargs)
    got_out, got_w = MultiheadAttention.from_torch(module)(q, k, v, **kwargs)
    assert_close(got_out, want_out)
    if opts["need_weights"]:
        assert_close(got_w, want_w)
    else:
        assert got_w is None


@pytest.mark.parametrize("bias,add_bias_kv,add_zero_attn,batch_first,separate",
                         list(itertools.product([False, True], repeat=5)))
def test_every_constructor_combination(bias, add_bias_kv, add_zero_attn, batch_first, separate):
    cfg = dict(embed_dim=16, num_heads=4, bias=bias, add_bias_kv=add_bias_kv,
               add_zero_attn=add_zero_attn, batch_first=batch_first)
    if separate:
        cfg.update(kdim=10, vdim=6)
    g = torch.Generator().manual_seed(7)
    module = randomize(torch.nn.MultiheadAttention(**cfg), 3)
    q, k, v = inputs(cfg, 2, 5, 9, True, g)
    kpm = torch.tensor([[False] * 9, [False] * 6 + [True] * 3])
    want = reference(module, q, k, v, key_padding_mask=kpm, average_attn_weights=False)
    got = MultiheadAttention.from_torch(module)(q, k, v, key_padding_mask=kpm,
                                                average_attn_weights=False)
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])


def test_numpy_inputs_give_numpy_outputs():
    module = randomize(torch.nn.MultiheadAttention(8, 2, batch_first=True), 1)
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 3, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    want_out, want_w = reference(module, q, k, k)
    out, w = MultiheadAttention.from_torch(module)(q.numpy(), k.numpy(), k.numpy())
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert_close(torch.from_numpy(out), want_out)
    assert_close(torch.from_numpy(w), want_w)


def test_low_precision_inputs_come_back_in_their_dtype():
    module = randomize(torch.nn.MultiheadAttention(16, 4), 4)
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(3, 2, 16, generator=g), torch.randn(7, 2, 16, generator=g)
    layer = MultiheadAttention.from_torch(module)
    for dtype, tol in ((torch.bfloat16, 2e-2), (torch.float16, 2e-3)):
        qd, kd = q.to(dtype), k.to(dtype)
        want, _ = reference(module, qd, kd, kd)
        got, w = layer(qd, kd, kd)
        assert got.dtype == dtype and w.dtype == dtype
        assert (got.double() - want).abs().max().item() <= tol * want.abs().max().item()


def test_strided_inputs_are_read_in_place():
    module = randomize(torch.nn.MultiheadAttention(8, 2), 6)
    g = torch.Generator().manual_seed(6)
    q = torch.randn(2, 4, 16, generator=g)[:, :, ::2].transpose(0, 1)   # [4, 2, 8], strided
    k = torch.randn(6, 2, 8, generator=g)
    want = reference(module, q, k, k)
    got = MultiheadAttention.from_torch(module)(q, k, k)
    assert_close(got[0], want[0])


def test_row_with_no_visible_key_is_zero_attention_not_nan():
    module = randomize(torch.nn.MultiheadAttention(8, 2, batch_first=True), 8)
    layer = MultiheadAttention.from_torch(module)
    q, k = torch.randn(1, 2, 8), torch.randn(1, 3, 8)
    out, w = layer(q, k, k, key_padding_mask=torch.ones(1, 3, dtype=torch.bool))
    # attention output 0, so out = out_proj(0) = its bias, and every weight 0
    assert torch.allclose(out, module.out_proj.bias.detach().expand(1, 2, 8))
    assert torch.count_nonzero(w) == 0


def test_load_state_dict_checks_names_and_shapes():
    layer = MultiheadAttention(8, 2)
    state = randomize(torch.nn.MultiheadAttention(8, 2), 9).state_dict()
    missing = {k: v for k, v in state.items() if k != "out_proj.bias"}
    with pytest.raises(xattn.Error, match="out_proj.bias"):
        layer.load_state_dict(missing)
    bad = dict(state, in_proj_weight=torch.zeros(24, 9))
    with pytest.raises(xattn.Error, match=r"in_proj_weight: expected shape \[24, 8\], got \[24, 9\]"):
        layer.load_state_dict(bad)
    with pytest.raises(TypeError):
        layer.load_state_dict(dict(state, in_proj_weight=[[0.0] * 8] * 24))


def test_bad_forward_arguments_are_named():
    layer = MultiheadAttention(8, 2)
    q, k = np.zeros((3, 2, 8), np.float32), np.zeros((5, 2, 8), np.float32)
    with pytest.raises(xattn.Error, match="key: last dim must be 8, got 7"):
        layer(q, np.zeros((5, 2, 7), np.float32), k)
    with pytest.raises(xattn.Error, match="key_padding_mask: expected shape \\[2, 5\\]"):
        layer(q, k, k, key_padding_mask=np.zeros((2, 4), bool))
    with pytest.raises(xattn.Error, match="attn_mask: a 2-D mask must be \\[L, S\\] = \\[3, 5\\]"):
        layer(q, k, k, attn_mask=np.zeros((5, 3), bool))
    with pytest.raises(xattn.Error, match="attn_mask: a 3-D mask must be"):
        layer(q, k, k, attn_mask=np.zeros((2, 3, 5), bool))
    with pytest.raises(xattn.Error, match="key, value: batch must equal"):
        layer(q, np.zeros((5, 3, 8), np.float32), np.zeros((5, 3, 8), np.float32))
    with pytest.raises(TypeError, match="query"):
        layer(q.astype(np.float64), k, k)
    with pytest.raises(TypeError, match="need_weights"):
        layer(q, k, k, need_weights="yes")
    with pytest.raises(xattn.Error, match="not divisible"):
        MultiheadAttention(10, 4)


# --- decoder caches --------------------------------------------------------------------------

def test_cross_attention_cache_step_by_step_equals_full():
    module = randomize(torch.nn.MultiheadAttention(32, 4, kdim=20, vdim=12), 11)
    layer = MultiheadAttention.from_torch(module)
    g = torch.Generator().manual_seed(12)
    memory_k, memory_v = torch.randn(50, 3, 20, generator=g), torch.randn(50, 3, 12, generator=g)
    queries = torch.randn(8, 3, 32, generator=g)
    kpm = torch.arange(50)[None, :] >= torch.tensor([50, 31, 7])[:, None]
    full, _ = layer(queries, memory_k, memory_v, key_padding_mask=kpm)
    cache = layer.make_cache(3)
    layer.extend_cache(cache, memory_k, memory_v)
    assert cache.length == 50
    steps = [layer.forward_cached(queries[t:t + 1], cache, key_padding_mask=kpm)[0]
             for t in range(8)]
    assert_close(torch.cat(steps), full.double(), rel=1e-6)
    want, _ = reference(module, queries, memory_k, memory_v, key_padding_mask=kpm)
    assert_close(full, want)


def test_self_attention_cache_grows_and_equals_causal_full():
    module = randomize(torch.nn.MultiheadAttention(16, 2, batch_first=True), 13)
    layer = MultiheadAttention.from_torch(module)
    x = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(14))
    full, _ = layer(x, x, x, is_causal=True)
    cache = layer.make_cache(2, capacity=2)   # too small on purpose: it must grow
    steps = []
    for t in range(12):
        token = x[:, t:t + 1]
        layer.extend_cache(cache, token, token)
        steps.append(layer.forward_cached(token, cache, is_causal=True)[0])
    assert cache.length == 12 and cache.capacity >= 12
    assert_close(torch.cat(steps, dim=1), full.double(), rel=1e-6)
    # Several new tokens at once: the query is the last L cached positions.
    chunked = layer.make_cache(2)
    layer.extend_cache(chunked, x[:, :5], x[:, :5])
    first = layer.forward_cached(x[:, :5], chunked, is_causal=True)[0]
    layer.extend_cache(chunked, x[:, 5:], x[:, 5:])
    rest = layer.forward_cached(x[:, 5:], chunked, is_causal=True)[0]
    assert_close(torch.cat([first, rest], dim=1), full.double(), rel=1e-6)


def test_beams_share_one_cached_sequence():
    module = randomize(torch.nn.MultiheadAttention(16, 4, add_bias_kv=True), 15)
    layer = MultiheadAttention.from_torch(module)
    g = torch.Generator().manual_seed(16)
    memory = torch.randn(9, 2, 16, generator=g)
    beams = 3
    query = torch.randn(1, 2 * beams, 16, generator=g)  # rows n*beams + b
    cache = layer.make_cache(2)
    layer.extend_cache(cache, memory, memory)
    got, w = layer.forward_cached(query, cache, need_weights=True)
    expanded = memory.repeat_interleave(beams, dim=1)    # what torch needs: one copy per beam
    want, want_w = reference(module, query, expanded, expanded)
    assert_close(got, want)
    assert_close(w, want_w)


def test_cache_errors():
    layer = MultiheadAttention(8, 2)
    cache = layer.make_cache(2)
    q = np.zeros((1, 2, 8), np.float32)
    with pytest.raises(xattn.Error, match="cache: is empty"):
        layer.forward_cached(q, cache)
    layer.extend_cache(cache, np.zeros((4, 2, 8), np.float32), np.zeros((4, 2, 8), np.float32))
    with pytest.raises(xattn.Error, match="multiple of the cache's batch 2"):
        layer.forward_cached(np.zeros((1, 3, 8), np.float32), cache)
    with pytest.raises(xattn.Error, match="expected batch 2"):
        layer.extend_cache(cache, np.zeros((4, 3, 8), np.float32), np.zeros((4, 3, 8), np.float32))
    with pytest.raises(xattn.Error, match="heads"):
        MultiheadAttention(8, 4).forward_cached(q, cache)
    with pytest.raises(TypeError, match="cache"):
        layer.forward_cached(q, "cache")


@pytest.mark.parametrize("separate", [False, True])
def test_load_safetensors_saved_from_a_torch_state_dict(tmp_path, separate):
    cfg = dict(embed_dim=16, num_heads=2, add_bias_kv=True, batch_first=False)
    if separate:
        cfg.update(kdim=6, vdim=10)
    module = randomize(torch.nn.MultiheadAttention(**cfg), 21)
    path = tmp_path / "model.safetensors"
    # As a checkpoint holds it: the layer's parameters under its module path, among others.
    state = {f"decoder.layers.0.encoder_attn.{k}": v for k, v in module.state_dict().items()}
    state["decoder.embed.weight"] = torch.zeros(3, 3)
    xattn.save_safetensors(path, state)
    layer = MultiheadAttention(**cfg)
    layer.load_safetensors(path, prefix="decoder.layers.0.encoder_attn.")
    g = torch.Generator().manual_seed(22)
    q, k, v = inputs(cfg, 2, 3, 5, True, g)
    assert_close(layer(q, k, v)[0], reference(module, q, k, v)[0])
    with pytest.raises(xattn.Error, match=r"model.safetensors \(prefix 'decoder.'\): state_dict: "
                                          r"missing 'in_proj_bias'"):
        MultiheadAttention(16, 2).load_safetensors(path, prefix="decoder.")


def test_empty_queries_and_empty_keys():
    module = randomize(torch.nn.MultiheadAttention(8, 2, add_zero_attn=True, batch_first=True), 23)
    layer = MultiheadAttention.from_torch(module)
    q, k = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    out, w = layer(q[:, :0], k, k)
    assert out.shape == (2, 0, 8) and w.shape == (2, 0, 5)
    # No keys at all but the zero key torch appends: torch is well defined, so compare.
    want = reference(module, q, k[:, :0], k[:, :0])
    got = layer(q, k[:, :0], k[:, :0])
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])
    # Without appended keys a row that sees nothing gets zeros before out_proj: its bias.
    plain = randomize(torch.nn.MultiheadAttention(8, 2), 24)
    none = k[:, :0].transpose(0, 1)
    out, w = MultiheadAttention.from_torch(plain)(q.transpose(0, 1), none, none)
    assert w.shape == (2, 3, 0)
    assert torch.equal(out, plain.out_proj.bias.detach().expand(3, 2, 8))
