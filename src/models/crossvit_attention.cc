// CrossViT's CLS-token cross-attention, reassociated so that the N tokens are never projected:
//   q = x_0·Wqᵀ + bq;  q̃_h = q_h·Wk_h             ([B, H, C]: each head's query in token space)
//   m_h = softmax(q̃_h·xᵀ · D^-½)·x                (one kernel call, one kv head for all H)
//   o_h = m_h·Wv_hᵀ + bv_h;  y = concat_h(o_h)·Wpᵀ + bp
// (q_h·bk_h is the same for every key and cancels; the weights sum to 1, so bv_h passes through.)

#include <cmath>
#include <optional>
#include <string>
#include <utility>

#include "models/config.h"
#include "models/tensor_ops.h"
#include "xattn/attention.h"
#include "xattn/error.h"
#include "xattn/models/crossvit.h"

namespace xattn::models {

CrossViTCrossAttention::CrossViTCrossAttention(const CrossViTCrossAttentionConfig& config)
    : config_(config) {
  const int64_t C = config.dim, H = config.num_heads;
  if (C < 1) throw Error("dim: must be >= 1, got " + std::to_string(C));
  if (H < 1 || C % H != 0)
    throw Error("num_heads: " + std::to_string(H) + " heads must divide the width " +
                std::to_string(C));
  wq_ = nn::Linear(C, C, config.qkv_bias);
  wk_ = nn::Linear(C, C, config.qkv_bias);
  wv_ = nn::Linear(C, C, config.qkv_bias);
  proj_ = nn::Linear(C, C);
}

CrossViTCrossAttention CrossViTCrossAttention::load(const std::string& path) {
  std::optional<CrossViTCrossAttention> model;
  read_checkpoint(path, "CrossViTCrossAttention", [&](const std::string& json, const Parameters& p) {
    const Config c(json);
    model.emplace(CrossViTCrossAttentionConfig{c.get<int64_t>("dim"),
                                               c.get<int64_t>("num_heads"),
                                               c.get<bool>("qkv_bias")});
    model->load(p);
  });
  return std::move(*model);
}

void CrossViTCrossAttention::load(const Parameters& p) {
  CrossViTCrossAttention next = *this;  // a failed load leaves this module as it was
  for (auto [layer, name] : {std::pair{&next.wq_, "wq"}, std::pair{&next.wk_, "wk"},
                             std::pair{&next.wv_, "wv"}, std::pair{&next.proj_, "proj"}}) {
    const Parameters q = p.under(std::string(name) + ".");
    layer->load(q["weight"], q["bias"], q.scope());
  }
  *this = std::move(next);
}

Tensor CrossViTCrossAttention::forward(const TensorView& x_in) const {
  const int64_t C = config_.dim, H = config_.num_heads, D = C / H;
  Tensor copy;
  const TensorView x = f32_tokens(x_in, "x", C, copy);
  const int64_t B = x.size(0), N = x.size(1);
  if (N < 1) throw Error("x: needs at least the CLS token, got 0 tokens");
  const auto* tokens = static_cast<const float*>(x.data);

  Tensor q({B, C});
  wq_.forward({tokens, B, C, x.stride(0)}, {q.data(), B, C, C});
  Tensor q_keys({B, H, C});
  for (int64_t h = 0; h < H; ++h)
    gemm({B, C, D, q.data() + h * D, C, wk_.weight().data() + h * D * C, C,
          q_keys.data() + h * C, H * C});

  const TensorView kv{tokens, DType::kF32,
                      Layout::strided({B, 1, N, C}, {x.stride(0), 0, x.stride(1), 1})};
  Tensor mixed({B, H, 1, C});
  AttentionParams params;
  params.scale = 1.0f / std::sqrt(static_cast<float>(D));
  const TensorView queries{q_keys.data(), DType::kF32, Layout::contiguous({B, H, 1, C})};
  attention(queries, kv, kv, params, {mixed.view()});

  Tensor o({B, C});
  for (int64_t h = 0; h < H; ++h)
    gemm({B, D, C, mixed.data() + h * C, H * C, wv_.weight().data() + h * D * C, C,
          o.data() + h * D, C, /*b_transposed=*/true});
  if (wv_.has_bias())
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < C; ++j) o.data()[b * C + j] += wv_.bias().data()[j];
  Tensor y({B, 1, C});
  proj_.forward({o.data(), B, C, C}, {y.data(), B, C, C});
  return y;
}

}  // namespace xattn::models
