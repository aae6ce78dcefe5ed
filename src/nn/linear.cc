// nn.Linear: one BLAS GEMM per call, the bias broadcast into the output first.

#include "xattn/nn/linear.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "nn/rows.h"
#include "nn/shapes.h"
#include "xattn/error.h"

namespace xattn::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, uint64_t seed)
    : in_(in_features), out_(out_features) {
  if (in_features < 1 || out_features < 1)
    throw Error("Linear: in_features and out_features must be >= 1, got " +
                std::to_string(in_features) + " and " + std::to_string(out_features));
  weight_ = Tensor({out_, in_});
  if (bias) bias_ = Tensor({out_});
  std::mt19937_64 rng(seed);
  const float bound = 1.0f / std::sqrt(static_cast<float>(in_));
  std::uniform_real_distribution<float> uniform(-bound, bound);
  for (int64_t i = 0; i < weight_.numel(); ++i) weight_.data()[i] = uniform(rng);
  for (int64_t i = 0; i < bias_.numel(); ++i) bias_.data()[i] = uniform(rng);
}

void copy_into(const TensorView& src, Tensor& dst, std::string_view name) {
  const std::string arg(name);
  expect_shape(src, dst.shape(), arg);
  if (dst.numel() == 0) return;
  std::vector<float> scratch;
  const RowsView rows = as_rows(src, arg, scratch);
  for (int64_t r = 0; r < rows.rows; ++r)
    std::copy_n(rows.data + r * rows.ld, rows.cols, dst.data() + r * rows.cols);
}

void require_absent(const TensorView& src, std::string_view name, std::string_view why) {
  if (src.present())
    throw Error(std::string(name) + ": expected none (" + std::string(why) + "), got shape " +
                shape_string(src));
}

void Linear::load(const TensorView& weight, const TensorView& bias, std::string_view name) {
  const std::string arg(name);
  // Validate both before writing either, so a failed load leaves the layer as it was.
  Tensor w(weight_.shape()), b(bias_.shape());
  copy_into(weight, w, arg + ".weight");
  if (has_bias()) copy_into(bias, b, arg + ".bias");
  else require_absent(bias, arg + ".bias", "the layer has no bias");
  weight_ = std::move(w);
  bias_ = std::move(b);
}

void Linear::forward(RowsView x, MutableRowsView y) const {
  if (x.cols != in_ || y.cols != out_ || x.rows != y.rows)
    throw Error("Linear::forward: expected x [rows, " + std::to_string(in_) + "] and y [rows, " +
                std::to_string(out_) + "], got x [" + std::to_string(x.rows) + ", " +
                std::to_string(x.cols) + "] and y [" + std::to_string(y.rows) + ", " +
                std::to_string(y.cols) + "]");
  if (x.rows == 0) return;
  // BLAS takes int sizes, and row strides no shorter than a row.
  constexpr int64_t kBlasMax = std::numeric_limits<int>::max();
  if (x.rows > kBlasMax || x.ld > kBlasMax || y.ld > kBlasMax || x.ld < in_ || y.ld < out_)
    throw Error("Linear::forward: rows " + std::to_string(x.rows) + ", row strides " +
                std::to_string(x.ld) + " and " + std::to_string(y.ld) +
                " must be at most 2^31 - 1 and no shorter than a row");
  float beta = 0.0f;
  if (has_bias()) {
    for (int64_t r = 0; r < y.rows; ++r) std::copy_n(bias_.data(), out_, y.data + r * y.ld);
    beta = 1.0f;
  }
  // y[rows, out] = x[rows, in] · W[out, in]ᵀ (+ y holding the bias)
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(x.rows),
              static_cast<int>(out_), static_cast<int>(in_), 1.0f, x.data,
              static_cast<int>(x.ld), weight_.data(), static_cast<int>(in_), beta, y.data,
              static_cast<int>(y.ld));
}

Tensor Linear::operator()(const TensorView& x) const {
  std::vector<float> scratch;
  const RowsView rows = as_rows(x, "x", scratch);
  if (rows.cols != in_)
    throw Error("x: last dim must equal in_features = " + std::to_string(in_) + ", got " +
                std::to_string(rows.cols));
  std::vector<int64_t> shape;
  for (int d = 0; d + 1 < x.rank(); ++d) shape.push_back(x.size(d));
  shape.push_back(out_);
  Tensor y(shape);
  forward(rows, {y.data(), rows.rows, out_, out_});
  return y;
}

}  // namespace xattn::nn
