#pragma once
// torch.nn.MultiheadAttention's masks as the fused kernel takes them. The padding mask becomes
// per-sequence key lengths when it only cuts a tail, or a [N, 1, 1, S] view; the attention mask a
// broadcasting view. Only a padding mask with holes together with an attention mask (or a shape
// no view can express) is combined into one dense mask, as torch always does.

#include <cstdint>
#include <vector>

#include "xattn/nn/tensor.h"
#include "xattn/params.h"
#include "xattn/tensor.h"

namespace xattn::nn {

// The kernel call's geometry: batch N (sequences of keys), num_heads H, and per sequence `beams`
// query sequences of q_len rows each, stacked as beams·q_len kernel rows; kv_len keys.
struct MaskGeometry {
  int64_t batch = 0, num_heads = 0, beams = 1, q_len = 0, kv_len = 0;
  bool batched = true;  // false: torch's unbatched shapes ([S], [L, S], [H, L, S])
};

// The masks in the kernel's terms; `params` points into this object.
struct KernelMask {
  std::vector<int64_t> kv_lens;
  std::vector<uint8_t> allowed;  // converted bool masks (kernel: true = may attend)
  Tensor combined;               // the dense fallback, additive
  TensorView view;               // what params.mask gets
};

// Validates key_padding_mask and attn_mask against `g` (errors name them) and translates them.
// Torch's conventions: bool true = may not attend; floats are added.
void plan_masks(const TensorView& key_padding_mask, const TensorView& attn_mask,
                const MaskGeometry& g, KernelMask& plan);

}  // namespace xattn::nn
