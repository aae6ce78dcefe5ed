// CrossViT's multi-scale fusion (the paper's eq. 2-4 and 7-9, as python/xattn/models/crossvit.py
// defines them) and the multi-scale encoder around it.

#include <optional>
#include <string>
#include <utility>

#include "models/config.h"
#include "models/tensor_ops.h"
#include "xattn/error.h"
#include "xattn/models/crossvit.h"

namespace xattn::models {
namespace {

constexpr float kEps = 1e-6f;  // timm's CrossViT LayerNorms

std::string str(int64_t x) { return std::to_string(x); }

void load_norm(nn::LayerNorm& norm, const Parameters& p) {
  norm.load(p["weight"], p["bias"], p.scope());
}

// The side of the square grid of a branch's patch tokens (all but the CLS token).
int64_t grid_side(int64_t tokens, int branch) {
  int64_t side = 0;
  while ((side + 1) * (side + 1) <= tokens - 1) ++side;
  if (side * side != tokens - 1)
    throw Error("xs[" + str(branch) + "]: pairwise fusion needs a square patch grid, got " +
                str(tokens - 1) + " patch tokens");
  return side;
}

// x [B, g_in², C] resized as a g_in × g_in grid to g_out × g_out (bilinear): [B, g_out², C].
Tensor resize_grid(const Tensor& x, int64_t g_in, int64_t g_out) {
  const std::vector<float> r = resize_matrix(g_in, g_out, Resize::kBilinear);  // [g_out, g_in]
  // Rows (i, j) of the output grid mix rows (k, l) of the input with weight r[i][k]·r[j][l].
  const int64_t n_in = g_in * g_in, n_out = g_out * g_out, B = x.size(0), C = x.size(2);
  std::vector<float> m(static_cast<size_t>(n_out * n_in));
  for (int64_t i = 0; i < g_out; ++i)
    for (int64_t j = 0; j < g_out; ++j)
      for (int64_t k = 0; k < g_in; ++k)
        for (int64_t l = 0; l < g_in; ++l)
          m[(i * g_out + j) * n_in + k * g_in + l] = r[i * g_in + k] * r[j * g_in + l];
  Tensor y({B, n_out, C});
  for (int64_t b = 0; b < B; ++b)
    gemm({n_out, C, n_in, m.data(), n_in, x.data() + b * n_in * C, C, y.data() + b * n_out * C, C});
  return y;
}

}  // namespace

FusionScheme fusion_scheme(const std::string& name) {
  if (name == "cross_attention") return FusionScheme::kCrossAttention;
  if (name == "all_attention") return FusionScheme::kAllAttention;
  if (name == "class_token") return FusionScheme::kClassToken;
  if (name == "pairwise") return FusionScheme::kPairwise;
  throw Error("scheme: expected cross_attention, all_attention, class_token or pairwise, got '" +
              name + "'");
}

CrossViTFusion::CrossViTFusion(const CrossViTFusionConfig& config) : config_(config) {
  const auto& dims = config.dims;
  for (int d = 0; d < 2; ++d)
    if (dims[d] < 1 || config.num_heads[d] < 1 || dims[d] % config.num_heads[d] != 0)
      throw Error("num_heads[" + str(d) + "]: " + str(config.num_heads[d]) +
                  " heads must divide the width " + str(dims[d]));
  if (config.scheme == FusionScheme::kCrossAttention) {
    for (int d = 0; d < 2; ++d) {
      const int o = 1 - d;
      projs_[d] = Projection(dims[d], dims[o], kEps);
      cls_attention_.push_back(
          {nn::LayerNorm(dims[o], kEps),
           CrossViTCrossAttention({dims[o], config.num_heads[o], config.qkv_bias})});
      revert_projs_[d] = Projection(dims[o], dims[d], kEps);
    }
    return;
  }
  const int wide = dims[0] >= dims[1] ? 0 : 1;
  for (int d = 0; d < 2; ++d) {
    projs_[d] = Projection(dims[d], dims[wide], kEps);
    revert_projs_[d] = Projection(dims[wide], dims[d], kEps);
  }
  if (config.scheme == FusionScheme::kAllAttention)
    all_attention_.push_back({nn::LayerNorm(dims[wide], kEps),
                              SelfAttention(dims[wide], config.num_heads[wide], config.qkv_bias)});
}

CrossViTFusion CrossViTFusion::load(const std::string& path) {
  std::optional<CrossViTFusion> model;
  read_checkpoint(path, "CrossViTFusion", [&](const std::string& json, const Parameters& p) {
    const Config c(json);
    model.emplace(CrossViTFusionConfig{
        c.get<std::array<int64_t, 2>>("dims"), c.get<std::array<int64_t, 2>>("num_heads"),
        fusion_scheme(c.get<std::string>("scheme")), c.get<bool>("qkv_bias")});
    model->load(p);
  });
  return std::move(*model);
}

void CrossViTFusion::load(const Parameters& p) {
  CrossViTFusion next = *this;  // a failed load leaves this module as it was
  for (int d = 0; d < 2; ++d) {
    next.projs_[d].load(p.under("projs." + str(d) + "."));
    next.revert_projs_[d].load(p.under("revert_projs." + str(d) + "."));
  }
  for (size_t d = 0; d < next.cls_attention_.size(); ++d) {
    const Parameters f = p.under("fusion." + str(static_cast<int64_t>(d)) + ".");
    load_norm(next.cls_attention_[d].norm1, f.under("norm1."));
    next.cls_attention_[d].attn.load(f.under("attn."));
  }
  for (FullAttention& block : next.all_attention_) {
    load_norm(block.norm1, p.under("fusion.norm1."));
    block.attn.load(p.under("fusion.attn."));
  }
  *this = std::move(next);
}

Branches CrossViTFusion::forward(const Branches& xs) const {
  for (int d = 0; d < 2; ++d) {
    const Tensor& x = xs[d];
    const std::string arg = "xs[" + str(d) + "]";
    if (x.rank() != 3 || x.size(2) != config_.dims[d] || x.size(0) != xs[0].size(0) ||
        x.size(1) < 1)
      throw Error(arg + ": expected [" + str(xs[0].rank() == 3 ? xs[0].size(0) : 0) +
                  ", 1 + N, " + str(config_.dims[d]) + "] with the CLS token first, got rank " +
                  str(x.rank()) + (x.rank() == 3 ? " [" + str(x.size(0)) + ", " + str(x.size(1)) +
                                                       ", " + str(x.size(2)) + "]"
                                                 : ""));
  }
  switch (config_.scheme) {
    case FusionScheme::kCrossAttention: return cross_attention(xs);
    case FusionScheme::kAllAttention: return all_attention(xs);
    case FusionScheme::kClassToken: return class_token(xs);
    case FusionScheme::kPairwise: return pairwise(xs);
  }
  throw Error("CrossViTFusion: unknown scheme");
}

// z_i = [g_i(f_i(cls_i) + CA(LN([f_i(cls_i) | patches_o]))) | patches_i]
Branches CrossViTFusion::cross_attention(const Branches& xs) const {
  Branches out;
  for (int d = 0; d < 2; ++d) {
    const int o = 1 - d;
    const ClsAttention& block = cls_attention_[d];
    Tensor cls = projs_[d].forward(slice_tokens(xs[d], 0, 1));
    const Tensor tokens = concat_tokens(cls, slice_tokens(xs[o], 1, xs[o].size(1)));
    add_into(cls, block.attn.forward(apply(block.norm1, tokens).view()));
    out[d] = concat_tokens(revert_projs_[d].forward(cls), slice_tokens(xs[d], 1, xs[d].size(1)));
  }
  return out;
}

// y = [f_0(x0) | f_1(x1)], o = y + MSA(LN(y)), z_i = g_i(o_i)
Branches CrossViTFusion::all_attention(const Branches& xs) const {
  const FullAttention& block = all_attention_[0];
  Tensor y = concat_tokens(projs_[0].forward(xs[0]), projs_[1].forward(xs[1]));
  add_into(y, block.attn.forward(apply(block.norm1, y)));
  const int64_t split = xs[0].size(1);
  return {revert_projs_[0].forward(slice_tokens(y, 0, split)),
          revert_projs_[1].forward(slice_tokens(y, split, y.size(1)))};
}

// z_i = [g_i(f_0(cls_0) + f_1(cls_1)) | patches_i]
Branches CrossViTFusion::class_token(const Branches& xs) const {
  Tensor cls = projs_[0].forward(slice_tokens(xs[0], 0, 1));
  add_into(cls, projs_[1].forward(slice_tokens(xs[1], 0, 1)));
  Branches out;
  for (int d = 0; d < 2; ++d)
    out[d] = concat_tokens(revert_projs_[d].forward(cls), slice_tokens(xs[d], 1, xs[d].size(1)));
  return out;
}

// z_i = g_i([f_0(cls_0) + f_1(cls_1) | f_i(patches_i) + resize(f_o(patches_o))])
Branches CrossViTFusion::pairwise(const Branches& xs) const {
  const int64_t grid[2] = {grid_side(xs[0].size(1), 0), grid_side(xs[1].size(1), 1)};
  const Tensor u[2] = {projs_[0].forward(xs[0]), projs_[1].forward(xs[1])};
  Tensor cls = slice_tokens(u[0], 0, 1);
  add_into(cls, slice_tokens(u[1], 0, 1));
  Branches out;
  for (int d = 0; d < 2; ++d) {
    const int o = 1 - d;
    Tensor patches = slice_tokens(u[d], 1, u[d].size(1));
    add_into(patches, resize_grid(slice_tokens(u[o], 1, u[o].size(1)), grid[o], grid[d]));
    out[d] = revert_projs_[d].forward(concat_tokens(cls, patches));
  }
  return out;
}

MultiScaleBlock::MultiScaleBlock(const CrossViTFusionConfig& fusion, std::array<int64_t, 2> depths,
                                 std::array<double, 2> mlp_ratio)
    : fusion_(fusion) {
  for (int d = 0; d < 2; ++d) {
    if (depths[d] < 0) throw Error("depth: must be >= 0, got " + str(depths[d]));
    for (int64_t j = 0; j < depths[d]; ++j)
      blocks_[d].emplace_back(fusion.dims[d], fusion.num_heads[d], mlp_ratio[d], fusion.qkv_bias,
                              kEps);
  }
}

void MultiScaleBlock::load(const Parameters& p) {
  for (int d = 0; d < 2; ++d)
    for (size_t j = 0; j < blocks_[d].size(); ++j)
      blocks_[d][j].load(p.under("blocks." + str(d) + "." + str(static_cast<int64_t>(j)) + "."));
  fusion_.load(p);
}

Branches MultiScaleBlock::forward(Branches xs) const {
  for (int d = 0; d < 2; ++d)
    for (const Block& block : blocks_[d]) block.forward(xs[d]);
  return fusion_.forward(xs);
}

}  // namespace xattn::models
