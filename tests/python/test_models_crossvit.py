"""xattn.models' CrossViT modules (CrossViTCrossAttention, CrossViTFusion in its four schemes, the
CrossViT classifier) against the float64 references of models_reference.py, written from the
paper and timm's definitions: outputs, and gradients w.r.t. every parameter and the inputs, to
1e-5 of the reference's largest value; checkpoints; bad input.

Resize sizes are chosen so that input / output size ratios are dyadic (36 -> 24 and 48, grids
3 <-> 6): torch's float32 interpolate computes its source coordinates in float32, which for a
ratio like 40 / 48 alone puts ~2e-6 of relative error in the resized image (float64 has none),
before any of the module's own arithmetic.
"""

import pytest
import torch

import xattn
from xattn.models import (CrossViT, CrossViTCrossAttention, CrossViTFusion, load_checkpoint,
                          save_checkpoint)

import models_reference as ref
from models_reference import check_against_reference, randn, randomize

SCHEMES = ["cross_attention", "all_attention", "class_token", "pairwise"]


def key_biases(names):
    """CrossViTCrossAttention's key bias: its gradient is 0 in exact arithmetic (and the module
    never reads it), see check_against_reference."""
    return {n for n in names if n == "wk.bias" or n.endswith(".wk.bias")}


# --- CrossViTCrossAttention ----------------------------------------------------------------------

@pytest.mark.parametrize("dim,heads,tokens", [(24, 3, 11), (32, 4, 197), (16, 1, 1), (12, 12, 5)])
@pytest.mark.parametrize("qkv_bias", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_cross_attention_is_timms_cls_attention(dim, heads, tokens, qkv_bias, seed):
    """The reassociated form (one kernel call over the raw tokens) against timm's plain
    q = wq(x_cls), k = wk(x), v = wv(x), per-head softmax(q kᵀ D^-0.5) v, proj."""
    module = randomize(CrossViTCrossAttention(dim, heads, qkv_bias), seed)
    x = randn(3, tokens, dim, seed=seed + 10)
    zero = key_biases(module.state_dict())
    if tokens == 1:  # one key: its weight is 1 whatever q and k, so wq and wk have no effect
        zero |= {n for n in module.state_dict() if n.startswith(("wq.", "wk."))}
    check_against_reference(
        module, lambda m, t: m(t), lambda P, t: ref.crossvit_cross_attention(P, t, heads), [x],
        seed, zero, "CrossViTCrossAttention")
    assert module(x).shape == (3, 1, dim)


def test_cross_attention_key_bias_has_no_effect_and_no_gradient():
    """wk.bias shifts every score of the row by the same q·bk: the output does not depend on it."""
    module = randomize(CrossViTCrossAttention(16, 2, qkv_bias=True), 3)
    x = randn(2, 9, 16, seed=4)
    before = module(x)
    with torch.no_grad():
        module.wk.bias.add_(randn(16, seed=5))
    assert (module(x) - before).abs().max().item() <= 1e-6 * before.abs().max().item()
    module(x).sum().backward()
    assert module.wk.bias.grad is None and module.wq.bias.grad is not None


# --- CrossViTFusion ------------------------------------------------------------------------------

FUSION_CASES = {  # dims, num_heads, patch tokens per branch (square grids 3 and 6 for pairwise)
    "narrow_first": ((16, 24), (2, 3), (9, 36)),
    "wide_first": ((24, 16), (4, 2), (36, 9)),
    "equal_widths": ((16, 16), (2, 4), (9, 9)),
}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case", FUSION_CASES)
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_fusion_matches_the_papers_equations(scheme, case, qkv_bias):
    dims, heads, patches = FUSION_CASES[case]
    seed = SCHEMES.index(scheme) + 7 * list(FUSION_CASES).index(case) + 50 * qkv_bias
    module = randomize(CrossViTFusion(dims, heads, scheme, qkv_bias), seed)
    xs = [randn(2, 1 + patches[d], dims[d], seed=seed + 100 + d) for d in range(2)]
    check_against_reference(
        module, lambda m, a, b: m([a, b]),
        lambda P, a, b: ref.crossvit_fusion(P, [a, b], dims, heads, scheme), xs, seed,
        key_biases(module.state_dict()), f"CrossViTFusion {scheme}")
    out = module(xs)
    assert [o.shape for o in out] == [x.shape for x in xs]


# --- CrossViT ------------------------------------------------------------------------------------

CROSSVIT_CASES = {
    # img_size, patch_size, input side, embed_dim, num_heads, depth, mlp_ratio, qkv_bias
    # both branches resized (36 -> 24 and 36 -> 48, bicubic), grids 4 and 8
    "resized": ((24, 48), (6, 6), 36, (16, 24), (2, 3), ((1, 2), (0, 1)), (2.0, 3.0), True),
    # the image at both branches' size (no resize), grids 4 and 8, the wide branch first
    "same_size": ((32, 32), (8, 4), 32, (24, 16), (3, 4), ((2, 1),), (2.0, 4.0), False),
    # one branch resized (48 -> 24), one not; grids 3 and 6; three stages
    "one_resized": ((24, 48), (8, 8), 48, (16, 16), (2, 2), ((1, 0), (0, 1), (1, 1)),
                    (3.0, 2.0), True),
}


def crossvit_config(case, scheme):
    img, patch, _, dims, heads, depth, ratio, bias = CROSSVIT_CASES[case]
    return dict(img_size=img, patch_size=patch, in_chans=3, num_classes=5, embed_dim=dims,
                depth=depth, num_heads=heads, mlp_ratio=ratio, qkv_bias=bias, fusion=scheme)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case", CROSSVIT_CASES)
@pytest.mark.parametrize("draw", [0, 1])
def test_crossvit_matches_the_reference(scheme, case, draw):
    seed = 3 * SCHEMES.index(scheme) + 20 * list(CROSSVIT_CASES).index(case) + 100 * draw
    config = crossvit_config(case, scheme)
    module = randomize(CrossViT(**config), seed)
    side = CROSSVIT_CASES[case][2]
    images = randn(2, 3, side, side, seed=seed + 5)
    check_against_reference(module, lambda m, x: m(x), lambda P, x: ref.crossvit(P, config, x),
                            [images], seed, key_biases(module.state_dict()),
                            f"CrossViT {scheme}")
    assert module(images).shape == (2, 5)


def test_crossvit_parameter_names_are_timms():
    names = set(CrossViT(**crossvit_config("resized", "cross_attention")).state_dict())
    for name in ["patch_embed.0.proj.weight", "cls_token.1", "pos_embed.0",
                 "blocks.0.blocks.1.1.attn.qkv.weight", "blocks.1.projs.0.2.bias",
                 "blocks.0.fusion.1.attn.wq.weight", "blocks.1.revert_projs.1.0.weight",
                 "norm.0.weight", "head.1.bias"]:
        assert name in names, name


# --- checkpoints ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make,inputs", [
    (lambda: CrossViTCrossAttention(24, 3, qkv_bias=True), lambda: [randn(2, 7, 24, seed=1)]),
    (lambda: CrossViTFusion((16, 24), (2, 3), "pairwise"),
     lambda: [[randn(2, 10, 16, seed=2), randn(2, 37, 24, seed=3)]]),
    (lambda: CrossViT(**crossvit_config("one_resized", "all_attention")),
     lambda: [randn(2, 3, 40, 40, seed=4)]),
])
def test_checkpoint_round_trip(tmp_path, make, inputs):
    module = randomize(make(), 11)
    path = str(tmp_path / "model.safetensors")
    save_checkpoint(module, path)
    loaded = load_checkpoint(path)
    assert type(loaded) is type(module) and not loaded.training
    assert loaded.config == module.config
    for name, t in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    args = inputs()
    want, got = module(*args), loaded(*args)
    for w, g in zip(want if isinstance(want, list) else [want],
                    got if isinstance(got, list) else [got]):
        assert torch.equal(w, g)


def test_load_checkpoint_of_a_plain_safetensors_file_is_refused(tmp_path):
    path = str(tmp_path / "plain.safetensors")
    xattn.save_safetensors(path, CrossViTCrossAttention(16, 2).state_dict())
    with pytest.raises(ValueError, match="not an xattn model checkpoint"):
        load_checkpoint(path)


def test_save_checkpoint_of_another_module_is_refused(tmp_path):
    with pytest.raises(TypeError, match="module"):
        save_checkpoint(torch.nn.Linear(3, 4), str(tmp_path / "x.safetensors"))


# --- bad input -----------------------------------------------------------------------------------

def unchanged(module):
    """A snapshot of the parameters, and a check that they still hold it."""
    saved = {n: t.clone() for n, t in module.state_dict().items()}
    return lambda: all(torch.equal(saved[n], t) for n, t in module.state_dict().items())


@pytest.mark.parametrize("make,match", [
    (lambda: CrossViTCrossAttention(24, 5), "num_heads"),
    (lambda: CrossViTCrossAttention(24, 0), "num_heads"),
    (lambda: CrossViTFusion((16, 24), (2, 3), "mean"), "scheme"),
    (lambda: CrossViTFusion((16, 24), (2, 5)), r"num_heads\[1\]"),
    (lambda: CrossViTFusion((16, 24, 8), (2, 3)), "dims"),
    (lambda: CrossViT(img_size=(30, 48), patch_size=(8, 12), embed_dim=(16, 24),
                      depth=((1, 1),), num_heads=(2, 3)), r"img_size\[0\]"),
    (lambda: CrossViT(img_size=(32, 50), patch_size=(8, 12), embed_dim=(16, 24),
                      depth=((1, 1),), num_heads=(2, 3)), r"img_size\[1\]"),
    (lambda: CrossViT(img_size=(32, 48), patch_size=(8, 12), embed_dim=(16, 24),
                      depth=((1, 1),), num_heads=(3, 3)), r"num_heads\[0\]"),
    (lambda: CrossViT(img_size=(32, 48), patch_size=(8, 12), embed_dim=(16, 24),
                      depth=((1, 1),), num_heads=(2, 3), fusion="sum"), "fusion"),
    (lambda: CrossViT(img_size=(32, 48), patch_size=(8, 12), embed_dim=(16, 24),
                      depth=(), num_heads=(2, 3), fusion="sum"), "fusion"),
    (lambda: CrossViT(img_size=(32, 48, 64)), "img_size"),
])
def test_bad_construction_names_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_cross_attention_input_names_the_argument():
    module = CrossViTCrossAttention(16, 2)
    intact = unchanged(module)
    for x, err in [(torch.zeros(2, 5, 12), ValueError), (torch.zeros(5, 16), ValueError),
                   (torch.zeros(1, 2, 5, 16), ValueError), ([[0.0] * 16], TypeError)]:
        with pytest.raises(err, match="x: expected"):
            module(x)
    assert intact()


@pytest.mark.parametrize("xs,err,match", [
    ((torch.zeros(2, 5, 16), torch.zeros(2, 5, 20)), ValueError, r"xs\[1\]: expected \[batch"),
    ((torch.zeros(2, 5, 24), torch.zeros(2, 5, 24)), ValueError, r"xs\[0\]: expected \[batch"),
    ((torch.zeros(2, 5, 16), torch.zeros(3, 5, 24)), ValueError, r"xs\[1\]: expected batch 2"),
    ((torch.zeros(5, 16), torch.zeros(2, 5, 24)), ValueError, r"xs\[0\]"),
    ((torch.zeros(2, 0, 16), torch.zeros(2, 5, 24)), ValueError, r"xs\[0\]: needs"),
    ((torch.zeros(2, 5, 16),), TypeError, "xs"),
    (torch.zeros(2, 5, 16), TypeError, "xs"),
    ((torch.zeros(2, 5, 16), "x"), TypeError, r"xs\[1\]"),
])
def test_bad_fusion_input_names_the_argument(xs, err, match):
    module = CrossViTFusion((16, 24), (2, 3), "cross_attention")
    intact = unchanged(module)
    with pytest.raises(err, match=match):
        module(list(xs) if isinstance(xs, tuple) else xs)
    assert intact()


@pytest.mark.parametrize("patches,match", [((8, 16), r"xs\[0\]: pairwise fusion needs a square"),
                                           ((9, 15), r"xs\[1\]: pairwise fusion needs a square")])
def test_pairwise_fusion_needs_square_grids(patches, match):
    module = CrossViTFusion((16, 24), (2, 3), "pairwise")
    intact = unchanged(module)
    with pytest.raises(ValueError, match=match):
        module([torch.zeros(2, 1 + patches[0], 16), torch.zeros(2, 1 + patches[1], 24)])
    assert intact()


@pytest.mark.parametrize("x,err", [(torch.zeros(2, 1, 32, 32), ValueError),
                                   (torch.zeros(3, 32, 32), ValueError),
                                   (torch.zeros(2, 3, 0, 32), ValueError),
                                   ([[0.0]], TypeError)])
def test_bad_images_name_the_argument(x, err):
    module = CrossViT(**crossvit_config("same_size", "class_token"))
    intact = unchanged(module)
    with pytest.raises(err, match="x: expected"):
        module(x)
    assert intact()
