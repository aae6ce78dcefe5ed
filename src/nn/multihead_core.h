#pragma once
// The part of MultiheadAttention between the input and output projections: masks, the kernel
// call (plus torch's always-visible bias and zero keys), torch's weights, the output projection.

#include "nn/mha_masks.h"
#include "xattn/nn/linear.h"
#include "xattn/nn/multihead_attention.h"
#include "xattn/params.h"
#include "xattn/tensor.h"

namespace xattn::nn {

// Projected queries [N, H, beams·L, hd] whose rows are laid out [N·beams][L][H·hd], and keys
// and values [N, H, S, hd].
struct ProjectedHeads {
  TensorView q, k, v;
};

// What the layer contributes beyond the heads.
struct MultiheadLayer {
  const Linear& out_proj;
  const Tensor& bias_k;  // [1, 1, E], or empty
  const Tensor& bias_v;
  bool add_zero_attn;
  bool batch_first;
};

MultiheadAttentionResult attend_heads(const ProjectedHeads& in, const MaskGeometry& g,
                                      CausalAlign align, const MultiheadAttentionOptions& options,
                                      const MultiheadLayer& layer);

}  // namespace xattn::nn
