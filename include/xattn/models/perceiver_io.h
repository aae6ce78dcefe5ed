#pragma once
// Perceiver IO (Jaegle et al., 2021) for inference: the C++ twin of
// python/xattn/models/perceiver.py, loading its checkpoints.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xattn/models/blocks.h"
#include "xattn/models/parameters.h"
#include "xattn/nn/linear.h"
#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::models {

struct PerceiverIOConfig {
  int64_t input_dim = 0;
  int64_t num_latents = 0;
  int64_t latent_dim = 0;
  int64_t num_cross_heads = 1;
  int64_t num_latent_heads = 8;
  int64_t num_self_layers = 6;
  int64_t query_dim = 0;   // 0: latent_dim
  int64_t output_dim = 0;  // 0: query_dim
  double mlp_ratio = 4.0;
};

class PerceiverIO {
 public:
  explicit PerceiverIO(const PerceiverIOConfig& config);
  static PerceiverIO load(const std::string& path);
  void load(const Parameters& p);  // latents, encoder.*, processor.{i}.*, decoder.*, output.*
  const PerceiverIOConfig& config() const { return config_; }

  // inputs [B, M, input_dim] (f32, f16 or bf16, any strides) -> latents [B, num_latents,
  // latent_dim]. input_lens (empty, or B values in [0, M]) are the rows' true lengths: the
  // kernel never reads the positions past them. Memory grows linearly with M.
  Tensor encode(const TensorView& inputs, std::span<const int64_t> input_lens = {}) const;
  Tensor process(Tensor latents) const;
  // queries [B, O, query_dim] attend to latents [B, N, latent_dim] -> [B, O, output_dim].
  Tensor decode(const Tensor& latents, const TensorView& queries) const;
  Tensor forward(const TensorView& inputs, const TensorView& queries,
                 std::span<const int64_t> input_lens = {}) const;

 private:
  PerceiverIOConfig config_;
  Tensor latents_;
  CrossAttentionBlock encoder_;
  std::vector<Block> processor_;
  CrossAttentionBlock decoder_;
  nn::Linear output_;
};

}  // namespace xattn::models
