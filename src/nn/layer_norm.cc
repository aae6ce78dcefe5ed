// nn.LayerNorm: the row statistics in double, so that a row far from zero (1e4 + noise) keeps
// the digits its deviations are made of.

#include "xattn/nn/layer_norm.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "nn/rows.h"
#include "xattn/error.h"

namespace xattn::nn {

LayerNorm::LayerNorm(int64_t normalized_size, float eps, bool elementwise_affine)
    : size_(normalized_size), eps_(eps) {
  if (normalized_size < 1)
    throw Error("LayerNorm: normalized_size must be >= 1, got " + std::to_string(normalized_size));
  if (!(eps >= 0.0f) || !std::isfinite(eps)) {
    std::ostringstream got;  // (std::to_string would print 1e-9 as 0.000000)
    got << eps;
    throw Error("LayerNorm: eps must be finite and >= 0, got " + got.str());
  }
  if (elementwise_affine) {
    weight_ = Tensor({size_});
    std::fill_n(weight_.data(), size_, 1.0f);
    bias_ = Tensor({size_});
  }
}

void LayerNorm::load(const TensorView& weight, const TensorView& bias, std::string_view name) {
  const std::string arg(name);
  if (!elementwise_affine()) {
    const char* why = "the layer has no elementwise affine";
    require_absent(weight, arg + ".weight", why);
    require_absent(bias, arg + ".bias", why);
    return;
  }
  // Validate both before writing either, so a failed load leaves the layer as it was.
  Tensor w(weight_.shape()), b(bias_.shape());
  copy_into(weight, w, arg + ".weight");
  copy_into(bias, b, arg + ".bias");
  weight_ = std::move(w);
  bias_ = std::move(b);
}

void LayerNorm::forward(RowsView x, MutableRowsView y) const {
  if (x.cols != size_ || y.cols != size_ || x.rows != y.rows)
    throw Error("LayerNorm::forward: expected x and y [rows, " + std::to_string(size_) +
                "], got x [" + std::to_string(x.rows) + ", " + std::to_string(x.cols) +
                "] and y [" + std::to_string(y.rows) + ", " + std::to_string(y.cols) + "]");
  const int64_t n = size_;
  const bool affine = elementwise_affine();
  const float* w = weight_.data();
  const float* b = bias_.data();
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* xr = x.data + r * x.ld;
    float* yr = y.data + r * y.ld;
    // Two passes, mean then Σ(x - mean)²: the one-pass E[x²] - mean² cancels to noise when
    // |mean| ≫ σ. The double sums are exact enough (n·2⁻⁵³ relative) for any row of floats,
    // and cannot overflow where f32 squares of 1e20 would.
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += xr[i];
    const double mean = sum / static_cast<double>(n);
    double squares = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double d = xr[i] - mean;
      squares += d * d;
    }
    const double var = squares / static_cast<double>(n) + static_cast<double>(eps_);
    // var = 0 only for a constant row with eps = 0, where every x - mean is exactly 0 (the sum of
    // n copies of a float is exact in double): take 0/0 as 0, so the row gives the bias.
    const double rstd = var > 0.0 ? 1.0 / std::sqrt(var) : 0.0;
    // Elementwise, reading xr[i] before writing yr[i], so y may be x.
    if (affine) {
      for (int64_t i = 0; i < n; ++i)
        yr[i] = static_cast<float>((xr[i] - mean) * rstd * w[i] + b[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) yr[i] = static_cast<float>((xr[i] - mean) * rstd);
    }
  }
}

Tensor LayerNorm::operator()(const TensorView& x) const {
  std::vector<float> scratch;
  const RowsView rows = as_rows(x, "x", scratch);
  if (rows.cols != size_)
    throw Error("x: last dim must equal normalized_size = " + std::to_string(size_) + ", got " +
                std::to_string(rows.cols));
  std::vector<int64_t> shape;
  for (int d = 0; d < x.rank(); ++d) shape.push_back(x.size(d));
  Tensor y(shape);
  forward(rows, {y.data(), rows.rows, size_, size_});
  return y;
}

}  // namespace xattn::nn
