// CCNet's criss-cross attention module. Per step, on x [B, C, H, W]:
//   qkv[b, p, :] = x[b, :, p]·Wᵀ + bias     (the three 1x1 convolutions as one GEMM, channels last)
//   out = criss_cross_attention(q, k, v)    (strided views of qkv; unscaled scores)
//   x[b, c, p] += γ·out[b, p, c]
// so the map is held channels first, as the caller gives it, and the kernel reads channels last.

#include "xattn/models/ccnet.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "models/config.h"
#include "models/tensor_ops.h"
#include "nn/shapes.h"
#include "xattn/criss_cross.h"
#include "xattn/error.h"

namespace xattn::models {
namespace {

std::string str(int64_t x) { return std::to_string(x); }

}  // namespace

CrissCrossAttention::CrissCrossAttention(const CrissCrossAttentionConfig& config)
    : config_(config) {
  if (config.in_channels < 8)
    throw Error("in_channels: expected >= 8 (queries and keys get in_channels / 8), got " +
                str(config.in_channels));
  if (config.recurrence < 1)
    throw Error("recurrence: expected >= 1, got " + str(config.recurrence));
  const int64_t C = config.in_channels;
  qkv_ = nn::Linear(C, 2 * (C / 8) + C);
}

CrissCrossAttention CrissCrossAttention::load(const std::string& path) {
  std::optional<CrissCrossAttention> model;
  read_checkpoint(path, "CrissCrossAttention", [&](const std::string& json, const Parameters& p) {
    const Config c(json);
    model.emplace(CrissCrossAttentionConfig{c.get<int64_t>("in_channels"),
                                            c.get<int64_t>("recurrence", 1)});
    model->load(p);
  });
  return std::move(*model);
}

void CrissCrossAttention::load(const Parameters& p) {
  const int64_t C = config_.in_channels, rows = qkv_.out_features();
  Tensor weight({rows, C}), bias({rows});
  int64_t row = 0;
  for (const auto& [name, out] : {std::pair{"query_conv", C / 8}, {"key_conv", C / 8},
                                  {"value_conv", C}}) {
    const Parameters conv = p.under(std::string(name) + ".");
    const TensorView w = conv["weight"];
    nn::expect_shape(w, {out, C, 1, 1}, conv.name("weight"));
    Tensor w2({out, C}), b({out});
    nn::copy_into({w.data, w.dtype, Layout::strided({out, C}, {w.stride(0), w.stride(1)})}, w2,
                  conv.name("weight"));
    nn::copy_into(conv["bias"], b, conv.name("bias"));
    std::copy_n(w2.data(), out * C, weight.data() + row * C);
    std::copy_n(b.data(), out, bias.data() + row);
    row += out;
  }
  Tensor gamma({1});
  nn::copy_into(p["gamma"], gamma, p.name("gamma"));
  nn::Linear qkv(C, rows);
  qkv.load(weight.view(), bias.view(), p.scope());
  qkv_ = std::move(qkv);  // only now: a failed load leaves the module as it was
  gamma_ = gamma.data()[0];
}

Tensor CrissCrossAttention::forward(const TensorView& x_in) const {
  const int64_t C = config_.in_channels;
  if (x_in.rank() != 4 || x_in.size(1) != C)
    throw Error("x: expected [B, " + str(C) + ", H, W], got " + nn::shape_string(x_in));
  Tensor x({x_in.size(0), C, x_in.size(2), x_in.size(3)});
  nn::copy_into(x_in, x, "x");
  for (int64_t r = 0; r < config_.recurrence; ++r) apply_once(x);
  return x;
}

void CrissCrossAttention::apply_once(Tensor& x) const {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = H * W;
  const int64_t n = qkv_.out_features(), c8 = C / 8;
  if (B * P == 0) return;
  Tensor qkv({B, H, W, n});
  for (int64_t b = 0; b < B; ++b) {
    float* rows = qkv.data() + b * P * n;
    for (int64_t p = 0; p < P; ++p) std::copy_n(qkv_.bias().data(), n, rows + p * n);
    gemm({P, n, C, x.data() + b * C * P, P, qkv_.weight().data(), C, rows, n,
          /*b_transposed=*/true, /*a_transposed=*/true, /*accumulate=*/true});
  }
  const auto part = [&](int64_t first, int64_t width) {
    return TensorView{qkv.data() + first, DType::kF32,
                      Layout::strided({B, H, W, width}, {P * n, W * n, n, 1})};
  };
  Tensor out({B, H, W, C});
  CrissCrossParams params;
  params.scale = 1.0f;
  criss_cross_attention(part(0, c8), part(c8, c8), part(2 * c8, C), params, {out.view()});

  // x[b, c, p] += γ·out[b, p, c], a block of pixels at a time so that both sides stay in cache.
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  const float g = gamma_;
  float* xs = x.data();
  const float* os = out.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t p0 = blk * kBlock, p1 = std::min(P, p0 + kBlock);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t p = p0; p < p1; ++p) xs[(b * C + c) * P + p] += g * os[(b * P + p) * C + c];
    }
}

}  // namespace xattn::models
