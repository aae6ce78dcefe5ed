"""The C++ models (xattn::models, run through `xattn model`) against their Python twins
(xattn.models) on the same checkpoint, and the command's handling of bad checkpoints and
inputs. The binary is the one built beside the imported module (build/xattn for build/python)."""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import xattn
import xattn.models as M

BIN = Path(xattn.__file__).resolve().parents[2] / "xattn"
TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def binary():
    if not BIN.is_file():
        pytest.fail(f"xattn binary not found at {BIN}")


def perturbed(module, seed):
    """The module with every parameter moved off its initial value (LayerNorms away from 1/0,
    zero biases and embeddings made random), so that a parameter loaded wrong shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return module.eval()


def run_cpp(tmp_path, module, inputs, outputs, extra=()):
    """Saves the module, runs `xattn model` on the inputs; returns {output name: array}."""
    ckpt = tmp_path / "model.safetensors"
    M.save_checkpoint(module, ckpt)
    args = [str(BIN), "model", str(ckpt)]
    for name, x in inputs.items():
        np.save(tmp_path / f"{name}.npy", x.numpy())
        args += ["--in", f"{name}={tmp_path / name}.npy"]
    for name in outputs:
        args += ["-o", f"{name}={tmp_path / 'out'}_{name}.npy"]
    proc = subprocess.run(args + list(extra), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {name: np.load(f"{tmp_path / 'out'}_{name}.npy") for name in outputs}


def assert_close(got, want):
    want = want.detach().numpy()
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= TOL, err


@pytest.mark.parametrize("seed,dim,heads,tokens,bias", [(0, 48, 6, 17, True), (1, 32, 1, 5, False),
                                                        (2, 64, 4, 1, True)])
def test_crossvit_cross_attention(tmp_path, seed, dim, heads, tokens, bias):
    torch.manual_seed(seed)
    m = perturbed(M.CrossViTCrossAttention(dim, heads, qkv_bias=bias), seed)
    x = torch.randn(3, tokens, dim)
    with torch.no_grad():
        assert_close(run_cpp(tmp_path, m, {"x": x}, ["out"])["out"], m(x))


@pytest.mark.parametrize("scheme", M.crossvit.SCHEMES)
def test_crossvit_fusion(tmp_path, scheme):
    torch.manual_seed(3)
    f = perturbed(M.CrossViTFusion((32, 48), (2, 3), scheme), 3)
    x0, x1 = torch.randn(2, 1 + 36, 32), torch.randn(2, 1 + 16, 48)
    with torch.no_grad():
        z = f([x0, x1])
    out = run_cpp(tmp_path, f, {"x0": x0, "x1": x1}, ["z0", "z1"])
    assert_close(out["z0"], z[0])
    assert_close(out["z1"], z[1])


@pytest.mark.parametrize("scheme", M.crossvit.SCHEMES)
@pytest.mark.parametrize("image", [32, 30])  # 30: both branches resize (bicubic)
def test_crossvit(tmp_path, scheme, image):
    torch.manual_seed(4)
    c = perturbed(M.CrossViT(img_size=(36, 32), patch_size=(6, 8), in_chans=2, num_classes=5,
                             embed_dim=(32, 48), depth=((1, 2), (0, 1)), num_heads=(2, 3),
                             mlp_ratio=(2.0, 3.0), fusion=scheme), 4)
    images = torch.randn(2, 2, image, image)
    with torch.no_grad():
        assert_close(run_cpp(tmp_path, c, {"images": images}, ["logits"])["logits"], c(images))


@pytest.mark.parametrize("lens", [None, [50, 100, 0]])
@pytest.mark.parametrize("layers,query_dim,output_dim", [(2, 24, 3), (0, None, None)])
def test_perceiver_io(tmp_path, lens, layers, query_dim, output_dim):
    torch.manual_seed(5)
    p = perturbed(M.PerceiverIO(8, 16, 32, num_cross_heads=2, num_latent_heads=4,
                                num_self_layers=layers, query_dim=query_dim,
                                output_dim=output_dim), 5)
    inputs, queries = torch.randn(3, 100, 8), torch.randn(3, 7, p.query_dim)
    extra = ["--input-lens", ",".join(map(str, lens))] if lens else []
    with torch.no_grad():
        want = p(inputs, queries, input_lens=lens)
    got = run_cpp(tmp_path, p, {"inputs": inputs, "queries": queries}, ["outputs"], extra)
    assert_close(got["outputs"], want)


@pytest.mark.parametrize("channels,recurrence,height,width", [(16, 1, 5, 7), (32, 2, 9, 4)])
def test_criss_cross_attention(tmp_path, channels, recurrence, height, width):
    torch.manual_seed(7)
    m = perturbed(M.CrissCrossAttention(channels, recurrence), 7)
    x = torch.randn(2, channels, height, width)
    with torch.no_grad():
        assert_close(run_cpp(tmp_path, m, {"x": x}, ["y"])["y"], m(x))


def test_criss_cross_attention_bad_checkpoint(tmp_path):
    m = M.CrissCrossAttention(16)
    ckpt = tmp_path / "cc.safetensors"
    M.save_checkpoint(m, ckpt)
    bad = rewrite(ckpt, tmp_path / "bad.safetensors",
                  lambda t, _: t.update({"key_conv.weight": np.zeros((2, 16), np.float32)}))
    np.save(tmp_path / "x.npy", np.zeros((1, 16, 3, 3), np.float32))
    proc = subprocess.run([str(BIN), "model", str(bad), "--in", f"x={tmp_path / 'x.npy'}", "-o",
                           f"y={tmp_path / 'y.npy'}"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "key_conv.weight: expected shape [2, 16, 1, 1], got [2, 16]" in proc.stderr, proc.stderr
    assert not (tmp_path / "y.npy").exists()


def speech_model(seed):
    """A small recogniser with random weights: its embedding large enough for peaky logits,
    and its EOT and SOT rows zero (logit 0 among large ones), so that it goes on talking."""
    torch.manual_seed(seed)
    m = perturbed(M.SpeechRecognizer(n_mels=80, dim=32, num_heads=4, encoder_layers=2,
                                     decoder_layers=2, mlp_ratio=2.0), seed)
    with torch.no_grad():
        m.embed.weight.mul_(8.0)
        m.embed.weight[:2] = 0.0
    return m


def test_speech_recognizer_logits(tmp_path):
    m = speech_model(8)
    features = torch.randn(37, 80)
    tokens = torch.tensor([1, 5, 9, 2, 0, 17], dtype=torch.float32)
    with torch.no_grad():
        want = m(features[None], tokens.long()[None])[0]
    got = run_cpp(tmp_path, m, {"features": features, "tokens": tokens}, ["logits"])["logits"]
    assert_close(got, want)


@pytest.mark.parametrize("seed", [9, 10])
def test_transcribe_with_the_caches_gives_the_tokens_of_full_recomputation(tmp_path, seed):
    """`xattn transcribe` decodes greedily against its KV caches; the Python module's
    transcribe re-runs the decoder on the whole prefix at every step. Same features (the same
    C++ code), same checkpoint: the same characters."""
    import wave
    m = speech_model(seed)
    ckpt = tmp_path / "speech.safetensors"
    M.save_checkpoint(m, ckpt)
    rng = np.random.default_rng(seed)
    with wave.open(str(tmp_path / "noise.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(22050)
        w.writeframes((rng.standard_normal(22050) * 3000).astype("<i2").tobytes())
    features = torch.from_numpy(xattn.audio.log_mel(xattn.audio.load(tmp_path / "noise.wav")))
    want = m.transcribe(features, max_tokens=12)
    for beams in (1, 3):
        proc = subprocess.run([str(BIN), "transcribe", str(tmp_path / "noise.wav"), "--model",
                               str(ckpt), "--max-tokens", "12", "--beams", str(beams)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout.split("\n")[0]
        if beams == 1:
            assert text == want
        assert "x real time" in proc.stdout
    assert len(want) > 0


def test_transcribe_bad_input(tmp_path):
    m = speech_model(11)
    ckpt = tmp_path / "speech.safetensors"
    M.save_checkpoint(m, ckpt)
    (tmp_path / "junk.wav").write_text("not audio")
    import wave
    with wave.open(str(tmp_path / "empty.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    with wave.open(str(tmp_path / "long.wav"), "wb") as w:  # stereo, 8 kHz, 121 s
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(2 * 8000 * 121, "<i2").tobytes())
    perceiver = tmp_path / "perceiver.safetensors"
    M.save_checkpoint(M.PerceiverIO(input_dim=4, num_latents=2, latent_dim=8), perceiver)
    for args, message in [([str(tmp_path / "junk.wav")], "junk.wav: not an audio file"),
                          ([str(tmp_path / "empty.wav")], "empty.wav: holds no samples"),
                          ([str(tmp_path / "long.wav")], "long.wav: is 121 s long, more than the "
                                                         "120 s allowed"),
                          ([str(tmp_path / "missing.wav")], "missing.wav: not an audio file"),
                          ([str(tmp_path / "junk.wav"), "--beams", "0"], "--beams: must be 1 to 64"),
                          ]:
        proc = subprocess.run([str(BIN), "transcribe", *args, "--model", str(ckpt)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    proc = subprocess.run([str(BIN), "transcribe", str(tmp_path / "junk.wav"), "--model",
                           str(tmp_path / "none.safetensors")], capture_output=True, text=True)
    assert proc.returncode == 2 and "none.safetensors" in proc.stderr
    proc = subprocess.run([str(BIN), "transcribe", str(tmp_path / "junk.wav"), "--model",
                           str(perceiver)], capture_output=True, text=True)
    assert proc.returncode == 2 and "holds a PerceiverIO, expected a SpeechRecognizer" in proc.stderr


# --- bad checkpoints and inputs -----------------------------------------------------------------

@pytest.fixture
def perceiver_files(tmp_path):
    torch.manual_seed(6)
    p = M.PerceiverIO(8, 4, 16, num_cross_heads=1, num_latent_heads=2, num_self_layers=1).eval()
    ckpt = tmp_path / "p.safetensors"
    M.save_checkpoint(p, ckpt)
    np.save(tmp_path / "inputs.npy", np.random.randn(2, 10, 8).astype(np.float32))
    np.save(tmp_path / "queries.npy", np.random.randn(2, 3, 16).astype(np.float32))
    return p, ckpt, tmp_path


def run_model(ckpt, d, *extra, out="out.npy"):
    args = [str(BIN), "model", str(ckpt), "--in", f"inputs={d / 'inputs.npy'}",
            "--in", f"queries={d / 'queries.npy'}", "-o", str(d / out), *map(str, extra)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def rewrite(ckpt, path, change):
    """A copy of the checkpoint with its tensors (a dict) and metadata passed through change."""
    tensors, meta = xattn.load_safetensors(ckpt, with_metadata=True)
    tensors = {k: np.array(v) for k, v in tensors.items()}
    change(tensors, meta)
    xattn.save_safetensors(path, tensors, meta)
    return path


def test_describe(perceiver_files):
    _, ckpt, _ = perceiver_files
    proc = subprocess.run([str(BIN), "model", str(ckpt)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("PerceiverIO: ")
    config = json.loads(proc.stdout.split("config: ")[1].splitlines()[0])
    assert config["latent_dim"] == 16 and config["num_self_layers"] == 1


@pytest.mark.parametrize("change,message", [
    (lambda t, m: t.pop("encoder.attn.k_proj.weight"),
     r"encoder\.attn: state_dict: missing 'k_proj\.weight'"),
    (lambda t, m: t.update({"encoder.attn.q_proj.bias": np.zeros(2, np.float32)}),
     r"encoder\.attn: q_proj\.bias: expected shape \[16\], got \[2\]"),
    (lambda t, m: t.update({"decoder.mlp.fc1.bias": np.zeros(3, np.float32)}),
     r"decoder\.mlp\.fc1\.bias: expected shape \[64\], got \[3\]"),
    (lambda t, m: t.update({"extra.weight": np.zeros(3, np.float32)}),
     r"unexpected tensor 'extra\.weight'"),
    (lambda t, m: m.update({"xattn.model": "CrossViT"}), r"expected a PerceiverIO|images"),
    (lambda t, m: m.pop("xattn.model"), r"not an xattn model checkpoint"),
    (lambda t, m: m.update({"xattn.config": "{\"input_dim\": 8}"}), r"missing 'num_latents'"),
    (lambda t, m: m.update({"xattn.config": "[1"}), r"not valid JSON"),
])
def test_bad_checkpoint(perceiver_files, change, message):
    _, ckpt, d = perceiver_files
    bad = rewrite(ckpt, d / "bad.safetensors", change)
    (d / "out.npy").write_bytes(b"keep")
    proc = run_model(bad, d)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert re.search(message, proc.stderr), proc.stderr
    assert (d / "out.npy").read_bytes() == b"keep"


@pytest.mark.parametrize("extra,message", [
    (["--input-lens", "3,11"], r"input_lens\[1\] = 11 is out of range \[0, 10\]"),
    (["--input-lens", "3"], r"input_lens: expected 2 lengths"),
    (["--input-lens", "3,x"], r"--input-lens: expected comma-separated integers"),
    (["--threads", "0"], r"--threads: expected an integer from 1"),
])
def test_bad_options(perceiver_files, extra, message):
    _, ckpt, d = perceiver_files
    proc = run_model(ckpt, d, *extra)
    assert proc.returncode == 2
    assert re.search(message, proc.stderr), proc.stderr
    assert not (d / "out.npy").exists()


def test_bad_inputs(perceiver_files):
    _, ckpt, d = perceiver_files
    np.save(d / "inputs.npy", np.zeros((2, 10, 7), np.float32))
    proc = run_model(ckpt, d)
    assert proc.returncode == 2 and "inputs: expected a float array [B, M, 8], got [2, 10, 7]" \
        in proc.stderr, proc.stderr
    np.save(d / "inputs.npy", np.zeros((2, 10, 8), np.float32))
    np.save(d / "queries.npy", np.zeros((3, 3, 16), np.float32))
    proc = run_model(ckpt, d)
    assert proc.returncode == 2 and "queries: expected a float array [2, L, 16]" in proc.stderr
    proc = subprocess.run([str(BIN), "model", str(ckpt), "--in", f"images={d / 'inputs.npy'}",
                           "-o", str(d / "o.npy")], capture_output=True, text=True)
    assert proc.returncode == 2 and "'images' is not one of this model's names (inputs, queries)" \
        in proc.stderr, proc.stderr
    assert not (d / "out.npy").exists() and not (d / "o.npy").exists()


# --- CrossFormer ---------------------------------------------------------------------------------

@pytest.mark.parametrize("norm,chans,dim,kernels,stride,size", [
    ("after", 3, 32, [4, 8, 16, 32], 4, (16, 24)), ("before", 8, 16, [2, 4], 2, (6, 4)),
    ("after", 5, 24, [3, 5, 7], 1, (4, 6))])
def test_crossformer_cross_scale_embedding(tmp_path, norm, chans, dim, kernels, stride, size):
    torch.manual_seed(7)
    m = perturbed(M.CrossScaleEmbedding(chans, dim, kernels, stride, norm), 7)
    x = torch.randn(2, chans, *size)
    with torch.no_grad():
        assert_close(run_cpp(tmp_path, m, {"x": x}, ["out"])["out"], m(x))


@pytest.mark.parametrize("kind,group,interval,H,W,bias,heads", [
    ("sda", 2, 1, 4, 6, True, 4), ("sda", 3, 1, 3, 9, False, 2), ("lda", 1, 2, 6, 4, True, 4),
    ("lda", 1, 3, 3, 6, True, 1), ("lda", 1, 1, 2, 5, True, 8)])
def test_crossformer_lsda(tmp_path, kind, group, interval, H, W, bias, heads):
    torch.manual_seed(8)
    m = perturbed(M.LSDA(64, heads, group, interval, kind, position_bias=bias), 8)
    x = torch.randn(2, H, W, 64)
    with torch.no_grad():
        want = m(x.reshape(2, H * W, 64), H, W).reshape(2, H, W, 64)
    assert_close(run_cpp(tmp_path, m, {"x": x}, ["out"])["out"], want)


@pytest.mark.parametrize("kind", ["sda", "lda"])
def test_crossformer_block(tmp_path, kind):
    torch.manual_seed(9)
    m = perturbed(M.CrossFormerBlock(48, 3, 2, 2, kind, mlp_ratio=2.0, qkv_bias=kind == "sda"), 9)
    x = torch.randn(2, 4, 6, 48)
    with torch.no_grad():
        want = m(x.reshape(2, 24, 48), 4, 6).reshape(2, 4, 6, 48)
    assert_close(run_cpp(tmp_path, m, {"x": x}, ["out"])["out"], want)


@pytest.mark.parametrize("config", [
    dict(img_size=32, patch_size=[4, 8], embed_dim=48, depths=[2, 2], num_heads=[2, 4],
         group_size=[2, 2], crs_interval=[2, 1], merge_size=[[2, 4]], num_classes=5),
    dict(img_size=[32, 64], patch_size=[4, 8, 16], in_chans=2, num_classes=3, embed_dim=48,
         depths=[2, 2, 1], num_heads=[1, 2, 4], group_size=[4, 4, 7], crs_interval=[2, 2, 1],
         mlp_ratio=1.5, qkv_bias=False, merge_size=[[2, 4], [2, 4, 6, 8]])])
def test_crossformer(tmp_path, config):
    torch.manual_seed(10)
    m = perturbed(M.CrossFormer(**config), 10)
    images = torch.randn(2, m.in_chans, *m.img_size)
    with torch.no_grad():
        assert_close(run_cpp(tmp_path, m, {"images": images}, ["logits"])["logits"], m(images))


@pytest.mark.parametrize("change,message", [
    (lambda t, m: t.update({"layers.0.blocks.1.attn.pos.pos3.2.weight":
                            np.zeros((3, 3), np.float32)}),
     r"layers\.0\.blocks\.1\.attn\.pos\.pos3\.2\.weight: expected shape \[2, 3\], got \[3, 3\]"),
    (lambda t, m: t.update({"patch_embed.projs.1.weight": np.zeros((24, 3, 4, 4), np.float32)}),
     r"patch_embed\.projs\.1\.weight: expected shape \[24, 3, 8, 8\], got \[24, 3, 4, 4\]"),
    (lambda t, m: t.pop("layers.0.downsample.norm.bias"), r"layers\.0\.downsample\.norm"),
    (lambda t, m: t.update({"layers.0.blocks.0.attn.biases": np.zeros((9, 2), np.float32)}),
     r"unexpected tensor 'layers\.0\.blocks\.0\.attn\.biases'"),
    (lambda t, m: m.update({"xattn.config": m["xattn.config"].replace('"crs_interval": [2, 1]',
                                                                      '"crs_interval": [3, 1]')}),
     r"img_size: stage 0's 8x8 map does not split into LDA groups of crs_interval\[0\] = 3"),
])
def test_crossformer_bad_checkpoint(tmp_path, change, message):
    m = M.CrossFormer(img_size=32, patch_size=[4, 8], embed_dim=48, depths=[2, 2],
                      num_heads=[2, 4], group_size=[2, 2], crs_interval=[2, 1],
                      merge_size=[[2, 4]], num_classes=5)
    ckpt = tmp_path / "cf.safetensors"
    M.save_checkpoint(m, ckpt)
    bad = rewrite(ckpt, tmp_path / "bad.safetensors", change)
    np.save(tmp_path / "images.npy", np.zeros((1, 3, 32, 32), np.float32))
    proc = subprocess.run([str(BIN), "model", str(bad), "--in", f"images={tmp_path / 'images.npy'}",
                           "-o", str(tmp_path / "out.npy")], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert not (tmp_path / "out.npy").exists()


def test_crossformer_bad_inputs(tmp_path):
    m = M.LSDA(48, 3, 2, 3, "sda")
    ckpt = tmp_path / "lsda.safetensors"
    M.save_checkpoint(m, ckpt)
    for shape, message in [((1, 3, 6, 48), r"H, W: SDA needs map sides that are multiples of "
                                           r"group_size = 2, got 3x6"),
                           ((1, 18, 48), r"--in x: expected a 4-D \[B, H, W, dim\] token map"),
                           ((1, 4, 6, 32), r"x: expected a float array \[B, L, 48\]")]:
        np.save(tmp_path / "x.npy", np.zeros(shape, np.float32))
        proc = subprocess.run([str(BIN), "model", str(ckpt), "--in", f"x={tmp_path / 'x.npy'}",
                               "-o", str(tmp_path / "out.npy")], capture_output=True, text=True)
        assert proc.returncode == 2 and re.search(message, proc.stderr), proc.stderr
        assert not (tmp_path / "out.npy").exists()
