// LSDA and its dynamic position bias. The groups of a map are gathered into group-major rows
// once, so that every group of the batch is one [N, dim] slice of one tensor: qkv is one GEMM,
// the attention one kernel call (batch = B·groups, heads as strided views of qkv, the position
// bias [heads, N, N] as the mask broadcast over that batch), proj one GEMM, and one scatter puts
// the rows back in map order.

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/config.h"
#include "models/tensor_ops.h"
#include "nn/heads.h"
#include "xattn/attention.h"
#include "xattn/error.h"
#include "xattn/models/crossformer.h"

namespace xattn::models {
namespace {

std::string str(int64_t x) { return std::to_string(x); }

void require_positive(int64_t value, const char* arg) {
  if (value < 1) throw Error(std::string(arg) + ": must be >= 1, got " + str(value));
}

}  // namespace

LsdaKind lsda_kind(const std::string& name) {
  if (name == "sda") return LsdaKind::kShort;
  if (name == "lda") return LsdaKind::kLong;
  throw Error("kind: expected one of sda, lda, got '" + name + "'");
}

DynamicPositionBias::DynamicPositionBias(const DynamicPositionBiasConfig& config)
    : config_(config) {
  require_positive(config.dim, "dim");
  require_positive(config.num_heads, "num_heads");
  const int64_t pos_dim = config.dim / 4;
  if (pos_dim < 1)
    throw Error("dim: the position MLP's width is dim // 4, which must be >= 1, got dim = " +
                str(config.dim));
  pos_proj_ = nn::Linear(2, pos_dim);
  for (int k = 0; k < 3; ++k) {
    norms_[k] = nn::LayerNorm(pos_dim, 1e-5f);
    linears_[k] = nn::Linear(pos_dim, k < 2 ? pos_dim : config.num_heads);
  }
}

void DynamicPositionBias::load(const Parameters& p) {
  DynamicPositionBias next = *this;
  const Parameters proj = p.under("pos_proj.");
  next.pos_proj_.load(proj["weight"], proj["bias"], proj.scope());
  for (int k = 0; k < 3; ++k) {
    const std::string pos = "pos" + str(k + 1) + ".";
    const Parameters norm = p.under(pos + "0."), linear = p.under(pos + "2.");
    next.norms_[k].load(norm["weight"], norm["bias"], norm.scope());
    next.linears_[k].load(linear["weight"], linear["bias"], linear.scope());
  }
  *this = std::move(next);
}

Tensor DynamicPositionBias::forward(int64_t group_h, int64_t group_w) const {
  require_positive(group_h, "group_h");
  require_positive(group_w, "group_w");
  const int64_t rows_h = 2 * group_h - 1, rows_w = 2 * group_w - 1, T = rows_h * rows_w;
  const int64_t heads = config_.num_heads, N = group_h * group_w;
  Tensor offsets({T, 2});  // (Δi, Δj), Δi outer, from 1 - G to G - 1
  for (int64_t r = 0; r < T; ++r) {
    offsets.data()[2 * r] = static_cast<float>(r / rows_w - (group_h - 1));
    offsets.data()[2 * r + 1] = static_cast<float>(r % rows_w - (group_w - 1));
  }
  Tensor h = apply(pos_proj_, offsets);
  for (int k = 0; k < 3; ++k) {
    h = apply(norms_[k], h);
    for (int64_t i = 0; i < h.numel(); ++i) h.data()[i] = std::max(h.data()[i], 0.0f);
    h = apply(linears_[k], h);
  }
  // bias[head, a, b] = table[offset(a - b), head], a and b row-major in the group.
  Tensor bias({heads, N, N});
  for (int64_t a = 0; a < N; ++a)
    for (int64_t b = 0; b < N; ++b) {
      const int64_t di = a / group_w - b / group_w, dj = a % group_w - b % group_w;
      const float* row = h.data() + ((di + group_h - 1) * rows_w + dj + group_w - 1) * heads;
      for (int64_t head = 0; head < heads; ++head) bias.data()[(head * N + a) * N + b] = row[head];
    }
  return bias;
}

LSDA::LSDA(const LSDAConfig& config) : config_(config) {
  const LSDAConfig& c = config_;
  require_positive(c.dim, "dim");
  require_positive(c.group_size, "group_size");
  require_positive(c.interval, "interval");
  if (c.num_heads < 1 || c.dim % c.num_heads != 0)
    throw Error("num_heads: " + str(c.num_heads) + " heads must divide the width " + str(c.dim));
  if (c.position_bias && c.dim / 16 < 1)
    throw Error("dim: the position bias's width is dim // 16, which must be >= 1, got dim = " +
                str(c.dim));
  qkv_ = nn::Linear(c.dim, 3 * c.dim, c.qkv_bias);
  proj_ = nn::Linear(c.dim, c.dim);
  if (c.position_bias) pos_.emplace(DynamicPositionBiasConfig{c.dim / 4, c.num_heads});
}

LSDA LSDA::load(const std::string& path) {
  std::optional<LSDA> model;
  read_checkpoint(path, "LSDA", [&](const std::string& json, const Parameters& p) {
    const Config j(json);
    model.emplace(LSDAConfig{j.get<int64_t>("dim"), j.get<int64_t>("num_heads"),
                             j.get<int64_t>("group_size"), j.get<int64_t>("interval"),
                             lsda_kind(j.get<std::string>("kind")), j.get<bool>("position_bias"),
                             j.get<bool>("qkv_bias")});
    model->load(p);
  });
  return std::move(*model);
}

void LSDA::load(const Parameters& p) {
  LSDA next = *this;
  for (auto [layer, name] : {std::pair{&next.qkv_, "qkv."}, std::pair{&next.proj_, "proj."}}) {
    const Parameters q = p.under(name);
    layer->load(q["weight"], q["bias"], q.scope());
  }
  if (next.pos_) next.pos_->load(p.under("pos."));
  *this = std::move(next);
}

std::array<int64_t, 2> LSDA::group_shape(int64_t H, int64_t W) const {
  const bool sda = config_.kind == LsdaKind::kShort;
  const int64_t step = sda ? config_.group_size : config_.interval;
  if (H % step != 0 || W % step != 0)
    throw Error(std::string("H, W: ") + (sda ? "SDA" : "LDA") +
                " needs map sides that are multiples of " + (sda ? "group_size" : "interval") +
                " = " + str(step) + ", got " + str(H) + "x" + str(W));
  if (sda) return {step, step};
  return {H / step, W / step};
}

Tensor LSDA::forward(const TensorView& x_in, int64_t H, int64_t W) const {
  const int64_t C = config_.dim, heads = config_.num_heads, D = C / heads;
  Tensor copy;
  const TensorView x = f32_tokens(x_in, "x", C, copy);
  if (H < 1) throw Error("H: must be >= 1, got " + str(H));
  if (W < 1) throw Error("W: must be >= 1, got " + str(W));
  if (H * W != x.size(1))
    throw Error("H, W: a " + str(H) + "x" + str(W) + " map has " + str(H * W) +
                " tokens, x has " + str(x.size(1)));
  const auto [gh, gw] = group_shape(H, W);
  const int64_t B = x.size(0), N = gh * gw, per_image = (H / gh) * (W / gw), n = B * per_image;
  const bool sda = config_.kind == LsdaKind::kShort;
  // The group-major row of map token (i, j): SDA's group (i / G, j / G) holds it at
  // (i % G, j % G); LDA's group (i % I, j % I) at (i / I, j / I).
  const int64_t groups_w = W / gw, I = config_.interval;
  std::vector<int64_t> rows(static_cast<size_t>(H * W));
  for (int64_t i = 0; i < H; ++i)
    for (int64_t j = 0; j < W; ++j) {
      const int64_t group = sda ? (i / gh) * groups_w + j / gw : (i % I) * I + j % I;
      const int64_t member = sda ? (i % gh) * gw + j % gw : (i / I) * gw + j / I;
      rows[i * W + j] = group * N + member;
    }

  const auto* tokens = static_cast<const float*>(x.data);
  Tensor grouped({n * N, C});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < H * W; ++t)
      std::copy_n(tokens + b * x.stride(0) + t * x.stride(1), C,
                  grouped.data() + (b * per_image * N + rows[t]) * C);

  Tensor qkv({n * N, 3 * C});
  qkv_.forward({grouped.data(), n * N, C, C}, {qkv.data(), n * N, 3 * C, 3 * C});
  // qkv [n, N, 3, heads, D]: q, k and v are [n, heads, N, D] views with row stride 3·C.
  const auto part = [&](int i) {
    return TensorView{qkv.data() + i * C, DType::kF32,
                      Layout::strided({n, heads, N, D}, {N * 3 * C, D, 3 * C, 1})};
  };
  AttentionParams params;
  params.scale = 1.0f / std::sqrt(static_cast<float>(D));
  Tensor bias;
  if (pos_) {
    bias = pos_->forward(gh, gw);
    params.mask = TensorView{bias.data(), DType::kF32, Layout::contiguous({heads, N, N})};
  }
  Tensor attended({n * N, C});
  attention(part(0), part(1), part(2), params, {nn::heads(attended.data(), n, heads, N, D)});
  proj_.forward({attended.data(), n * N, C, C}, {grouped.data(), n * N, C, C});

  Tensor y({B, H * W, C});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < H * W; ++t)
      std::copy_n(grouped.data() + (b * per_image * N + rows[t]) * C, C,
                  y.data() + (b * H * W + t) * C);
  return y;
}

}  // namespace xattn::models
