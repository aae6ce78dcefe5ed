#pragma once
// CCNet's criss-cross attention module (Huang et al. 2019) for inference: the C++ twin of
// python/xattn/models/ccnet.py, loading its checkpoints (the official code's parameter names).

#include <cstdint>
#include <string>

#include "xattn/models/parameters.h"
#include "xattn/nn/linear.h"
#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::models {

using nn::Tensor;

struct CrissCrossAttentionConfig {
  int64_t in_channels = 0;  // C >= 8; queries and keys get C / 8 channels
  int64_t recurrence = 1;   // RCCA's R: the module applied R times with the same weights
};

// y = γ·CC(x) + x on x [B, C, H, W], `recurrence` times: each pixel attends to its row and
// column (itself once) with unscaled scores, through xattn::criss_cross_attention.
class CrissCrossAttention {
 public:
  explicit CrissCrossAttention(const CrissCrossAttentionConfig& config);
  static CrissCrossAttention load(const std::string& path);  // a save_checkpoint file
  void load(const Parameters& p);  // query_conv.*, key_conv.*, value_conv.* ([O, C, 1, 1]), gamma
  const CrissCrossAttentionConfig& config() const { return config_; }

  // x: f32, f16 or bf16, any strides. Throws xattn::Error naming x for a wrong shape.
  Tensor forward(const TensorView& x) const;

 private:
  void apply_once(Tensor& x) const;  // x += γ·CC(x), in place

  CrissCrossAttentionConfig config_;
  nn::Linear qkv_;  // the three 1x1 convolutions as one [C/8 + C/8 + C, C] matrix
  float gamma_ = 0.0f;
};

}  // namespace xattn::models
