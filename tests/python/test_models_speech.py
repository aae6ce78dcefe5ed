"""xattn.models.SpeechRecognizer against a float64 reference written here in plain torch from
its definition (convolutions, sinusoidal positions, pre-LayerNorm blocks, attention masked to
each row's valid frames, causal decoder self-attention, tied output embedding): logits and the
gradients of every parameter and the features; a padded batch against each utterance alone;
text tokens; checkpoints in float16."""

import math

import pytest
import torch
import torch.nn.functional as F

from xattn.models import SpeechRecognizer, load_checkpoint, save_checkpoint
from xattn.models.speech import CHARS, EOT, SOT, decode_tokens, encode_text

from models_reference import check_against_reference, gelu, layer_norm, linear, randn, randomize

EPS = 1e-5  # torch's LayerNorm default


def positions(length, dim):
    """sin(p·r_c) on channels c < dim/2 and cos on the rest, r_c = 10000^(-c / (dim/2 - 1))."""
    half = dim // 2
    p = torch.arange(length, dtype=torch.float64)[:, None]
    r = torch.tensor([10000.0 ** (-c / max(half - 1, 1)) for c in range(half)], dtype=torch.float64)
    return torch.cat([torch.sin(p * r), torch.cos(p * r)], dim=1)


def attention(P, prefix, x, memory, heads, key_lens=None, causal=False):
    """torch.nn.MultiheadAttention's math: q, k, v from in_proj, softmax(q kᵀ/√D + mask) v, out_proj."""
    dim = x.shape[-1]
    W, b = P[prefix + "in_proj_weight"], P[prefix + "in_proj_bias"]
    q, k, v = (linear(y, W[i * dim:(i + 1) * dim], b[i * dim:(i + 1) * dim])
               for i, y in enumerate((x, memory, memory)))
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, dim // heads).transpose(1, 2)
    s = split(q) @ split(k).transpose(-1, -2) / math.sqrt(dim // heads)
    L, S = s.shape[-2:]
    hidden = torch.zeros(s.shape[0], 1, L, S, dtype=torch.bool)
    if key_lens is not None:
        hidden |= (torch.arange(S)[None, :] >= torch.tensor(key_lens)[:, None])[:, None, None, :]
    if causal:
        hidden |= torch.ones(L, S, dtype=torch.bool).triu(1)
    a = torch.softmax(s.masked_fill(hidden, -math.inf), dim=-1) @ split(v)
    return linear(a.transpose(1, 2).reshape(x.shape[0], L, dim), P[prefix + "out_proj.weight"],
                  P[prefix + "out_proj.bias"])


def norm(P, prefix, x):
    return layer_norm(x, P[prefix + "weight"], P[prefix + "bias"], EPS)


def mlp(P, prefix, x):
    return linear(gelu(linear(x, P[prefix + "fc1.weight"], P[prefix + "fc1.bias"])),
                  P[prefix + "fc2.weight"], P[prefix + "fc2.bias"])


def reference(P, features, tokens, lens, config):
    heads, dim = config["num_heads"], config["dim"]
    valid = (torch.arange(features.shape[1])[None, :] < torch.tensor(lens)[:, None]).double()
    x = gelu(F.conv1d((features * valid[:, :, None]).transpose(1, 2), P["conv1.weight"],
                      P["conv1.bias"], padding=1))
    x = gelu(F.conv1d(x * valid[:, None, :], P["conv2.weight"], P["conv2.bias"], stride=2,
                      padding=1)).transpose(1, 2)
    x = x + positions(x.shape[1], dim)
    audio_lens = [math.ceil(n / 2) for n in lens]
    for i in range(config["encoder_layers"]):
        p = f"encoder.{i}."
        h = norm(P, p + "norm1.", x)
        x = x + attention(P, p + "attn.", h, h, heads, key_lens=audio_lens)
        x = x + mlp(P, p + "mlp.", norm(P, p + "norm2.", x))
    audio = norm(P, "encoder_norm.", x)
    y = P["embed.weight"][tokens] + positions(tokens.shape[1], dim)
    for i in range(config["decoder_layers"]):
        p = f"decoder.{i}."
        h = norm(P, p + "norm1.", y)
        y = y + attention(P, p + "self_attn.", h, h, heads, causal=True)
        y = y + attention(P, p + "cross_attn.", norm(P, p + "norm2.", y), audio, heads,
                          key_lens=audio_lens)
        y = y + mlp(P, p + "mlp.", norm(P, p + "norm3.", y))
    return norm(P, "decoder_norm.", y) @ P["embed.weight"].transpose(0, 1)


CONFIGS = [dict(n_mels=12, dim=16, num_heads=2, encoder_layers=2, decoder_layers=1),
           dict(n_mels=8, dim=24, num_heads=3, encoder_layers=1, decoder_layers=2, mlp_ratio=2.0)]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("lens", [[9, 6], [7, 1]])
def test_matches_the_reference(config, lens):
    seed = config["dim"] + lens[1]
    model = randomize(SpeechRecognizer(**config), seed, tokens=0.5)
    features = randn(2, max(lens), config["n_mels"], seed=seed + 1)
    features[1, lens[1]:] = 1e4  # padding: must not matter
    tokens = torch.randint(0, 2 + len(CHARS), (2, 5), generator=torch.Generator().manual_seed(seed))
    check_against_reference(model, lambda m, f: m(f, tokens, lens),
                            lambda P, f: reference(P, f, tokens, lens, model.config), [features],
                            seed, label=f"speech {config['dim']} {lens}")


def test_a_padded_batch_gives_each_utterance_alone():
    torch.manual_seed(0)
    model = randomize(SpeechRecognizer(n_mels=10, dim=16, num_heads=2, encoder_layers=2,
                                       decoder_layers=2), 3, tokens=0.5).eval()
    lens = [13, 8, 3]
    features = randn(3, 13, 10, seed=4)
    for b, n in enumerate(lens):
        features[b, n:] = float("nan") if b == 1 else -1e30
    tokens = torch.randint(2, 20, (3, 6))
    with torch.no_grad():
        batch = model(features, tokens, lens)
        for b, n in enumerate(lens):
            alone = model(features[b:b + 1, :n], tokens[b:b + 1])
            assert (batch[b] - alone[0]).abs().max() <= 1e-5 * alone.abs().max()


def test_tokens_and_text():
    assert decode_tokens(encode_text("Call 7, Nine!") + [EOT, 5]) == "call  nine"
    assert encode_text("ab")[0] == 2 + CHARS.index("a") and SOT == 1 and EOT == 0


def test_float16_checkpoint(tmp_path):
    model = randomize(SpeechRecognizer(n_mels=8, dim=16, num_heads=2, encoder_layers=1,
                                       decoder_layers=1), 5, tokens=0.5).eval()
    save_checkpoint(model, tmp_path / "s.safetensors", dtype=torch.float16)
    again = load_checkpoint(tmp_path / "s.safetensors")
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert b.dtype == torch.float32 and torch.equal(a.half().float(), b), name
    with pytest.raises(TypeError, match="dtype: expected None, torch.float32"):
        save_checkpoint(model, tmp_path / "t.safetensors", dtype=torch.int8)


def test_bad_construction():
    with pytest.raises(ValueError, match="dim: must be even and a multiple of num_heads = 4"):
        SpeechRecognizer(dim=30, num_heads=4)
