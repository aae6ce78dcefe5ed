#pragma once
// CrossViT (Chen, Fan and Panda, 2021) for inference: the C++ twins of
// python/xattn/models/crossvit.py, loading its checkpoints (timm's parameter names).

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "xattn/models/blocks.h"
#include "xattn/models/parameters.h"
#include "xattn/nn/layer_norm.h"
#include "xattn/nn/linear.h"
#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::models {

// Two branches' token sequences, each [B, 1 + N_i, width_i] with its CLS token first.
using Branches = std::array<Tensor, 2>;

struct CrossViTCrossAttentionConfig {
  int64_t dim = 0;
  int64_t num_heads = 8;
  bool qkv_bias = false;
};

// The CLS token of x attends to all of x: x [B, N, dim] -> [B, 1, dim], timm's CrossAttention
// (wq, wk, wv, proj). One kernel call over the raw tokens with the queries q_h·Wk_h (the
// reassociation that python/xattn/models/crossvit.py explains): no projection of the N tokens.
class CrossViTCrossAttention {
 public:
  explicit CrossViTCrossAttention(const CrossViTCrossAttentionConfig& config);
  static CrossViTCrossAttention load(const std::string& path);  // a save_checkpoint file
  void load(const Parameters& p);
  const CrossViTCrossAttentionConfig& config() const { return config_; }

  // x: f32, f16 or bf16, any strides. Throws xattn::Error naming x for a wrong shape.
  Tensor forward(const TensorView& x) const;

 private:
  CrossViTCrossAttentionConfig config_;
  nn::Linear wq_, wk_, wv_, proj_;
};

enum class FusionScheme { kCrossAttention, kAllAttention, kClassToken, kPairwise };
// "cross_attention", "all_attention", "class_token", "pairwise"; throws xattn::Error otherwise.
FusionScheme fusion_scheme(const std::string& name);

struct CrossViTFusionConfig {
  std::array<int64_t, 2> dims{};
  std::array<int64_t, 2> num_heads{};
  FusionScheme scheme = FusionScheme::kCrossAttention;
  bool qkv_bias = true;
};

// Multi-scale fusion of two branches, each scheme as the Python module's docstring defines it.
class CrossViTFusion {
 public:
  explicit CrossViTFusion(const CrossViTFusionConfig& config);
  static CrossViTFusion load(const std::string& path);
  void load(const Parameters& p);  // projs.*, fusion.*, revert_projs.*
  const CrossViTFusionConfig& config() const { return config_; }

  // Throws xattn::Error naming the branch for wrong widths, batches or (pairwise) grids.
  Branches forward(const Branches& xs) const;

 private:
  Branches cross_attention(const Branches& xs) const;
  Branches all_attention(const Branches& xs) const;
  Branches class_token(const Branches& xs) const;
  Branches pairwise(const Branches& xs) const;

  struct ClsAttention {  // timm's CrossAttentionBlock: x[:, :1] + attn(norm1(x))
    nn::LayerNorm norm1;
    CrossViTCrossAttention attn;
  };
  struct FullAttention {  // all-attention fusion: y + attn(norm1(y))
    nn::LayerNorm norm1;
    SelfAttention attn;
  };

  CrossViTFusionConfig config_;
  std::array<Projection, 2> projs_, revert_projs_;
  std::vector<ClsAttention> cls_attention_;  // cross_attention: one per branch
  std::vector<FullAttention> all_attention_;  // all_attention: one
};

// One multi-scale encoder: each branch's ViT blocks, then the fusion.
class MultiScaleBlock {
 public:
  MultiScaleBlock(const CrossViTFusionConfig& fusion, std::array<int64_t, 2> depths,
                  std::array<double, 2> mlp_ratio);
  void load(const Parameters& p);  // blocks.{i}.{j}.*, and the fusion's names
  Branches forward(Branches xs) const;

 private:
  std::array<std::vector<Block>, 2> blocks_;
  CrossViTFusion fusion_;
};

struct CrossViTConfig {
  std::array<int64_t, 2> img_size{240, 224};
  std::array<int64_t, 2> patch_size{12, 16};
  int64_t in_chans = 3;
  int64_t num_classes = 1000;
  std::array<int64_t, 2> embed_dim{192, 384};
  std::vector<std::array<int64_t, 2>> depth{{1, 4}, {1, 4}, {1, 4}};
  std::array<int64_t, 2> num_heads{6, 6};
  std::array<double, 2> mlp_ratio{4.0, 4.0};
  bool qkv_bias = true;
  FusionScheme fusion = FusionScheme::kCrossAttention;
};

// The classifier: images [B, in_chans, H, W] -> logits [B, num_classes]. Branch i resizes the
// image to img_size[i] when it differs (bicubic, as torch's interpolate with align_corners=False).
class CrossViT {
 public:
  explicit CrossViT(const CrossViTConfig& config);
  static CrossViT load(const std::string& path);
  void load(const Parameters& p);
  const CrossViTConfig& config() const { return config_; }

  // images: f32, f16 or bf16, any strides. Throws xattn::Error naming `images`.
  Tensor forward(const TensorView& images) const;

 private:
  CrossViTConfig config_;
  std::array<nn::Linear, 2> patch_embed_;  // the convolutions as [dim, chans·p·p] matrices
  std::array<Tensor, 2> cls_token_, pos_embed_;
  std::vector<MultiScaleBlock> blocks_;
  std::array<nn::LayerNorm, 2> norm_;
  std::array<nn::Linear, 2> head_;
};

}  // namespace xattn::models
