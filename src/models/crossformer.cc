// The CrossFormer block and classifier: the patch embedding, stages of blocks on a map that
// halves between stages (the stage rule decides each block's grouping once, from img_size), the
// final LayerNorm, the mean over tokens and the head.

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "models/config.h"
#include "models/tensor_ops.h"
#include "nn/shapes.h"
#include "xattn/error.h"
#include "xattn/models/crossformer.h"

namespace xattn::models {
namespace {

constexpr float kEps = 1e-5f;  // the official code's nn.LayerNorm default

std::string str(int64_t x) { return std::to_string(x); }

LSDAConfig attention_of(const CrossFormerBlockConfig& c) {
  return {c.dim, c.num_heads, c.group_size, c.interval, c.kind, true, c.qkv_bias};
}

void load_norm(nn::LayerNorm& layer, const Parameters& p) {
  layer.load(p["weight"], p["bias"], p.scope());
}

}  // namespace

CrossFormerBlock::CrossFormerBlock(const CrossFormerBlockConfig& config)
    : config_(config), attn_(attention_of(config)) {
  norm1_ = nn::LayerNorm(config.dim, kEps);
  norm2_ = nn::LayerNorm(config.dim, kEps);
  mlp_ = Mlp(config.dim, static_cast<int64_t>(static_cast<double>(config.dim) * config.mlp_ratio));
}

CrossFormerBlock CrossFormerBlock::load(const std::string& path) {
  std::optional<CrossFormerBlock> model;
  read_checkpoint(path, "CrossFormerBlock", [&](const std::string& json, const Parameters& p) {
    const Config j(json);
    model.emplace(CrossFormerBlockConfig{
        j.get<int64_t>("dim"), j.get<int64_t>("num_heads"), j.get<int64_t>("group_size"),
        j.get<int64_t>("interval"), lsda_kind(j.get<std::string>("kind")),
        j.get<double>("mlp_ratio"), j.get<bool>("qkv_bias")});
    model->load(p);
  });
  return std::move(*model);
}

void CrossFormerBlock::load(const Parameters& p) {
  CrossFormerBlock next = *this;
  load_norm(next.norm1_, p.under("norm1."));
  next.attn_.load(p.under("attn."));
  load_norm(next.norm2_, p.under("norm2."));
  next.mlp_.load(p.under("mlp."));
  *this = std::move(next);
}

Tensor CrossFormerBlock::forward(const TensorView& x, int64_t H, int64_t W) const {
  Tensor y = tokens_of(x, "x", config_.dim);
  forward(y, H, W);
  return y;
}

void CrossFormerBlock::forward(Tensor& x, int64_t H, int64_t W) const {
  add_into(x, attn_.forward(apply(norm1_, x).view(), H, W));
  add_into(x, mlp_.forward(apply(norm2_, x)));
}

CrossFormer::CrossFormer(const CrossFormerConfig& config) : config_(config) {
  const CrossFormerConfig& c = config_;
  const size_t stages = c.depths.size();
  if (stages == 0) throw Error("depths: expected at least one stage, got none");
  const auto same_length = [&](const std::vector<int64_t>& v, const char* arg) {
    if (v.size() != stages)
      throw Error(std::string(arg) + ": expected " + str(int64_t(stages)) + " values, got " +
                  str(int64_t(v.size())));
  };
  same_length(c.num_heads, "num_heads");
  same_length(c.group_size, "group_size");
  same_length(c.crs_interval, "crs_interval");
  if (c.merge_size.size() != stages - 1)
    throw Error("merge_size: expected " + str(int64_t(stages - 1)) +
                " lists of kernel sizes (one per stage but the last), got " +
                str(int64_t(c.merge_size.size())));
  if (c.patch_size.empty()) throw Error("patch_size: expected at least one kernel size");
  if (c.num_classes < 1) throw Error("num_classes: must be >= 1, got " + str(c.num_classes));
  patch_embed_ = CrossScaleEmbedding(
      {c.in_chans, c.embed_dim, c.patch_size, c.patch_size[0], /*norm_before=*/false});
  const auto sized = [](const CrossScaleEmbedding& e, std::array<int64_t, 2> size) {
    try {
      return e.output_size(size[0], size[1]);
    } catch (const Error& error) {
      throw Error(std::string("img_size: ") + error.what());
    }
  };
  std::array<int64_t, 2> size = sized(patch_embed_, c.img_size);
  for (size_t i = 0; i < stages; ++i) {
    const std::string s = str(int64_t(i));
    const int64_t dim = c.embed_dim << i, G = c.group_size[i], I = c.crs_interval[i];
    if (c.depths[i] < 1) throw Error("depths[" + s + "]: must be >= 1, got " + str(c.depths[i]));
    if (c.num_heads[i] < 1 || dim % c.num_heads[i] != 0)
      throw Error("num_heads[" + s + "]: " + str(c.num_heads[i]) +
                  " heads must divide the width " + str(dim));
    Stage stage{size, {}, std::nullopt};
    const int64_t H = size[0], W = size[1], short_side = std::min(H, W);
    for (int64_t j = 0; j < c.depths[i]; ++j) {
      // The official rule: a map no larger than a group is one SDA group per block.
      const bool whole = short_side <= G;
      const LsdaKind kind = whole || j % 2 == 0 ? LsdaKind::kShort : LsdaKind::kLong;
      const int64_t step = whole ? short_side : kind == LsdaKind::kShort ? G : I;
      if (G < 1 || I < 1 || H % step != 0 || W % step != 0)
        throw Error("img_size: stage " + s + "'s " + str(H) + "x" + str(W) +
                    " map does not split into " + (kind == LsdaKind::kShort ? "SDA" : "LDA") +
                    " groups of " + (kind == LsdaKind::kShort ? "group_size[" : "crs_interval[") +
                    s + "] = " + str(step));
      stage.blocks.emplace_back(CrossFormerBlockConfig{dim, c.num_heads[i], whole ? short_side : G,
                                                       I, kind, c.mlp_ratio, c.qkv_bias});
    }
    if (i + 1 < stages) {
      stage.downsample.emplace(
          CrossScaleEmbeddingConfig{dim, 2 * dim, c.merge_size[i], 2, /*norm_before=*/true});
      size = sized(*stage.downsample, size);
    }
    layers_.push_back(std::move(stage));
  }
  const int64_t final_dim = c.embed_dim << (stages - 1);
  norm_ = nn::LayerNorm(final_dim, kEps);
  head_ = nn::Linear(final_dim, c.num_classes);
}

CrossFormer CrossFormer::load(const std::string& path) {
  std::optional<CrossFormer> model;
  read_checkpoint(path, "CrossFormer", [&](const std::string& json, const Parameters& p) {
    const Config j(json);
    CrossFormerConfig c;
    c.img_size = j.get<std::array<int64_t, 2>>("img_size");
    c.patch_size = j.get<std::vector<int64_t>>("patch_size");
    c.in_chans = j.get<int64_t>("in_chans");
    c.num_classes = j.get<int64_t>("num_classes");
    c.embed_dim = j.get<int64_t>("embed_dim");
    c.depths = j.get<std::vector<int64_t>>("depths");
    c.num_heads = j.get<std::vector<int64_t>>("num_heads");
    c.group_size = j.get<std::vector<int64_t>>("group_size");
    c.crs_interval = j.get<std::vector<int64_t>>("crs_interval");
    c.mlp_ratio = j.get<double>("mlp_ratio");
    c.qkv_bias = j.get<bool>("qkv_bias");
    c.merge_size = j.get<std::vector<std::vector<int64_t>>>("merge_size");
    model.emplace(c);
    model->load(p);
  });
  return std::move(*model);
}

void CrossFormer::load(const Parameters& p) {
  CrossFormer next = *this;
  next.patch_embed_.load(p.under("patch_embed."));
  for (size_t i = 0; i < next.layers_.size(); ++i) {
    const Parameters layer = p.under("layers." + str(int64_t(i)) + ".");
    Stage& stage = next.layers_[i];
    for (size_t j = 0; j < stage.blocks.size(); ++j)
      stage.blocks[j].load(layer.under("blocks." + str(int64_t(j)) + "."));
    if (stage.downsample) stage.downsample->load(layer.under("downsample."));
  }
  load_norm(next.norm_, p.under("norm."));
  const Parameters head = p.under("head.");
  next.head_.load(head["weight"], head["bias"], head.scope());
  *this = std::move(next);
}

Tensor CrossFormer::forward(const TensorView& images) const {
  const CrossFormerConfig& c = config_;
  if (!images.present()) throw Error("images: is required");
  if (images.rank() != 4 || images.dtype == DType::kBool || images.size(0) < 0 ||
      images.size(1) != c.in_chans || images.size(2) != c.img_size[0] ||
      images.size(3) != c.img_size[1])
    throw Error("images: expected a float array [B, " + str(c.in_chans) + ", " +
                str(c.img_size[0]) + ", " + str(c.img_size[1]) + "], got " +
                nn::shape_string(images));
  Tensor x = patch_embed_.forward(images);
  for (const Stage& stage : layers_) {
    const auto [H, W] = stage.size;
    for (const CrossFormerBlock& block : stage.blocks) block.forward(x, H, W);
    if (stage.downsample) x = stage.downsample->forward_tokens(x.view(), H, W);
  }
  const Tensor normed = apply(norm_, x);
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  Tensor pooled({B, C});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t k = 0; k < C; ++k)
        pooled.data()[b * C + k] += normed.data()[(b * L + t) * C + k];
  for (int64_t i = 0; i < pooled.numel(); ++i) pooled.data()[i] /= static_cast<float>(L);
  return apply(head_, pooled);
}

}  // namespace xattn::models
