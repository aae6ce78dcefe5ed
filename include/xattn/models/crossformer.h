#pragma once
// CrossFormer (Wang et al., ICLR 2022) for inference: the C++ twins of
// python/xattn/models/crossformer.py, loading its checkpoints (the official parameter names).
// Token maps are [B, H·W, width] tensors, row-major over the map.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "xattn/models/blocks.h"
#include "xattn/models/conv2d.h"
#include "xattn/models/parameters.h"
#include "xattn/nn/layer_norm.h"
#include "xattn/nn/linear.h"
#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::models {

struct CrossScaleEmbeddingConfig {
  int64_t in_channels = 0;
  int64_t dim = 0;
  std::vector<int64_t> kernel_sizes;
  int64_t stride = 1;
  bool norm_before = false;  // "before": LayerNorm(in_channels) on the input, else on the output
};

// The cross-scale embedding layer: convolutions of several kernel sizes k_i, one stride, padding
// (k_i - stride) / 2, concatenated along channels (conv i gives dim / 2^(i+1), the last
// dim / 2^(n-1)). Each convolution is im2col + one GEMM (xattn/models/conv2d.h).
class CrossScaleEmbedding {
 public:
  CrossScaleEmbedding() = default;
  explicit CrossScaleEmbedding(const CrossScaleEmbeddingConfig& config);
  static CrossScaleEmbedding load(const std::string& path);
  void load(const Parameters& p);  // projs.{i}.weight, projs.{i}.bias, norm.*
  const CrossScaleEmbeddingConfig& config() const { return config_; }

  // The output map's size for an H x W input. Throws xattn::Error naming H, W when a kernel is
  // larger than the padded map, or kernel_sizes when the convolutions' maps differ.
  std::array<int64_t, 2> output_size(int64_t H, int64_t W) const;
  // images [B, in_channels, H, W] (f32, f16 or bf16, any strides) -> [B, H'·W', dim].
  Tensor forward(const TensorView& images) const;
  // x [B, H·W, in_channels] tokens -> [B, H'·W', dim].
  Tensor forward_tokens(const TensorView& x, int64_t H, int64_t W) const;

 private:
  Tensor embed(Tensor tokens, int64_t H, int64_t W) const;  // tokens [B, H·W, C], owned

  CrossScaleEmbeddingConfig config_;
  std::vector<Conv2d> projs_;
  nn::LayerNorm norm_;
};

struct DynamicPositionBiasConfig {
  int64_t dim = 0;  // the MLP is dim / 4 wide (LSDA passes its own dim / 4)
  int64_t num_heads = 1;
};

// The dynamic position bias: pos3(pos2(pos1(pos_proj(Δi, Δj)))), pos_k = LayerNorm, ReLU, Linear.
class DynamicPositionBias {
 public:
  DynamicPositionBias() = default;
  explicit DynamicPositionBias(const DynamicPositionBiasConfig& config);
  void load(const Parameters& p);  // pos_proj.*, pos{1,2,3}.0.* (LayerNorm), pos{1,2,3}.2.*
  const DynamicPositionBiasConfig& config() const { return config_; }

  // [num_heads, N, N] for a group_h x group_w group (N = group_h·group_w, row-major): the MLP on
  // each of the (2·group_h - 1)(2·group_w - 1) offsets once, gathered per pair.
  Tensor forward(int64_t group_h, int64_t group_w) const;

 private:
  DynamicPositionBiasConfig config_;
  nn::Linear pos_proj_;
  std::array<nn::LayerNorm, 3> norms_;
  std::array<nn::Linear, 3> linears_;
};

enum class LsdaKind { kShort, kLong };
// "sda", "lda"; throws xattn::Error naming `kind` otherwise.
LsdaKind lsda_kind(const std::string& name);

struct LSDAConfig {
  int64_t dim = 0;
  int64_t num_heads = 1;
  int64_t group_size = 7;  // SDA: G x G windows
  int64_t interval = 8;    // LDA: tokens `interval` apart
  LsdaKind kind = LsdaKind::kShort;
  bool position_bias = true;
  bool qkv_bias = true;
};

// Long short distance attention within groups of a map's tokens (python/xattn/models/
// crossformer.py's LSDA has the rules). The tokens are permuted into group-major order once, qkv
// is one GEMM, and all groups of the batch are one kernel call whose q, k, v are strided views of
// it and whose mask is the position bias [heads, N, N], broadcast over the groups.
class LSDA {
 public:
  LSDA() = default;
  explicit LSDA(const LSDAConfig& config);
  static LSDA load(const std::string& path);
  void load(const Parameters& p);  // qkv.*, proj.*, pos.* (with position_bias)
  const LSDAConfig& config() const { return config_; }

  // (group_h, group_w) for an H x W map; throws xattn::Error naming H, W when it does not split.
  std::array<int64_t, 2> group_shape(int64_t H, int64_t W) const;
  // x [B, H·W, dim] (f32, f16 or bf16, any strides) -> [B, H·W, dim].
  Tensor forward(const TensorView& x, int64_t H, int64_t W) const;

 private:
  LSDAConfig config_;
  nn::Linear qkv_, proj_;
  std::optional<DynamicPositionBias> pos_;
};

struct CrossFormerBlockConfig {
  int64_t dim = 0;
  int64_t num_heads = 1;
  int64_t group_size = 7;
  int64_t interval = 8;
  LsdaKind kind = LsdaKind::kShort;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
};

// x += attn(norm1(x), H, W); x += mlp(norm2(x)).
class CrossFormerBlock {
 public:
  CrossFormerBlock() = default;
  explicit CrossFormerBlock(const CrossFormerBlockConfig& config);
  static CrossFormerBlock load(const std::string& path);
  void load(const Parameters& p);  // norm1.*, attn.*, norm2.*, mlp.*
  const CrossFormerBlockConfig& config() const { return config_; }

  Tensor forward(const TensorView& x, int64_t H, int64_t W) const;  // x [B, H·W, dim]
  void forward(Tensor& x, int64_t H, int64_t W) const;              // in place, x checked

 private:
  CrossFormerBlockConfig config_;
  nn::LayerNorm norm1_, norm2_;
  LSDA attn_;
  Mlp mlp_;
};

struct CrossFormerConfig {  // CrossFormer-S
  std::array<int64_t, 2> img_size{224, 224};
  std::vector<int64_t> patch_size{4, 8, 16, 32};
  int64_t in_chans = 3;
  int64_t num_classes = 1000;
  int64_t embed_dim = 96;
  std::vector<int64_t> depths{2, 2, 6, 2};
  std::vector<int64_t> num_heads{3, 6, 12, 24};
  std::vector<int64_t> group_size{7, 7, 7, 7};
  std::vector<int64_t> crs_interval{8, 4, 2, 1};
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  std::vector<std::vector<int64_t>> merge_size{{2, 4}, {2, 4}, {2, 4}};
};

// The classifier: images [B, in_chans, img_size] -> logits [B, num_classes]. Stage i's blocks
// alternate SDA and LDA, except on a map no larger than group_size[i], which is one SDA group
// per block (the official rule); CrossScaleEmbeddings with stride 2 merge between stages.
class CrossFormer {
 public:
  explicit CrossFormer(const CrossFormerConfig& config);
  static CrossFormer load(const std::string& path);
  void load(const Parameters& p);  // patch_embed.*, layers.{i}.blocks.{j}.*,
                                   // layers.{i}.downsample.*, norm.*, head.*
  const CrossFormerConfig& config() const { return config_; }

  // images: f32, f16 or bf16, any strides. Throws xattn::Error naming `images`.
  Tensor forward(const TensorView& images) const;

 private:
  struct Stage {
    std::array<int64_t, 2> size;  // the map the blocks see
    std::vector<CrossFormerBlock> blocks;
    std::optional<CrossScaleEmbedding> downsample;
  };

  CrossFormerConfig config_;
  CrossScaleEmbedding patch_embed_;
  std::vector<Stage> layers_;
  nn::LayerNorm norm_;
  nn::Linear head_;
};

}  // namespace xattn::models
