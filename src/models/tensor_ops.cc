// Token tensors, layers over them, GEMM, and interpolation weights.

#include "models/tensor_ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "nn/rows.h"
#include "nn/shapes.h"
#include "xattn/error.h"
#include "xattn/nn/activations.h"

namespace xattn::models {

void check_tokens(const TensorView& x, const std::string& arg, int64_t width, int64_t batch) {
  if (!x.present()) throw Error(arg + ": is required");
  if (x.rank() != 3 || x.dtype == DType::kBool || x.size(2) != width || x.size(0) < 0 ||
      x.size(1) < 0 || (batch >= 0 && x.size(0) != batch))
    throw Error(arg + ": expected a float array [" + (batch >= 0 ? std::to_string(batch) : "B") +
                ", L, " + std::to_string(width) + "], got " +
                (x.dtype == DType::kBool ? "bool " : "") + nn::shape_string(x));
}

Tensor tokens_of(const TensorView& x, const std::string& arg, int64_t width, int64_t batch) {
  check_tokens(x, arg, width, batch);
  Tensor t({x.size(0), x.size(1), width});
  nn::copy_into(x, t, arg);
  return t;
}

TensorView f32_tokens(const TensorView& x, const std::string& arg, int64_t width, Tensor& copy,
                      int64_t batch) {
  check_tokens(x, arg, width, batch);
  const bool readable = x.dtype == DType::kF32 && x.stride(2) == 1 && x.stride(1) >= width &&
                        x.stride(0) >= width && x.stride(0) <= std::numeric_limits<int>::max();
  if (readable) return x;
  copy = tokens_of(x, arg, width, batch);
  return copy.view();
}

Tensor slice_tokens(const Tensor& x, int64_t begin, int64_t end) {
  const int64_t B = x.size(0), L = x.size(1), W = x.size(2), n = end - begin;
  Tensor y({B, n, W});
  for (int64_t b = 0; b < B; ++b)
    std::copy_n(x.data() + (b * L + begin) * W, n * W, y.data() + b * n * W);
  return y;
}

Tensor concat_tokens(const Tensor& a, const Tensor& b) {
  const int64_t B = a.size(0), La = a.size(1), Lb = b.size(1), W = a.size(2);
  Tensor y({B, La + Lb, W});
  for (int64_t i = 0; i < B; ++i) {
    float* row = y.data() + i * (La + Lb) * W;
    std::copy_n(a.data() + i * La * W, La * W, row);
    std::copy_n(b.data() + i * Lb * W, Lb * W, row + La * W);
  }
  return y;
}

void add_into(Tensor& x, const Tensor& y) {
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] += y.data()[i];
}

Tensor apply(const nn::Linear& layer, const Tensor& x) { return layer(x.view()); }
Tensor apply(const nn::LayerNorm& layer, const Tensor& x) { return layer(x.view()); }

void gelu_inplace(Tensor& x) {
  nn::gelu_inplace(x.data(), x.numel(), nn::GeluApproximation::kNone);
}

void gemm(const Gemm& g) {
  if (g.m == 0 || g.n == 0) return;
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  for (const int64_t s : {g.m, g.n, g.k, g.lda, g.ldb, g.ldc})
    if (s > kMax) throw Error("gemm: sizes beyond BLAS's int range");
  const auto i = [](int64_t s) { return static_cast<int>(s); };
  cblas_sgemm(CblasRowMajor, g.a_transposed ? CblasTrans : CblasNoTrans,
              g.b_transposed ? CblasTrans : CblasNoTrans, i(g.m), i(g.n), i(g.k), 1.0f, g.a,
              i(g.lda), g.b, i(g.ldb), g.accumulate ? 1.0f : 0.0f, g.c, i(g.ldc));
}

namespace {

// Keys' cubic convolution kernel with torch's A = -0.75, for |t| <= 1 and 1 < |t| < 2.
double cubic_near(double t, double a) { return ((a + 2) * t - (a + 3)) * t * t + 1; }
double cubic_far(double t, double a) { return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a; }

}  // namespace

std::vector<float> resize_matrix(int64_t in, int64_t out, Resize kind) {
  std::vector<double> r(static_cast<size_t>(out * in), 0.0);
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const auto add = [&](int64_t o, int64_t i, double w) {
    r[o * in + std::clamp<int64_t>(i, 0, in - 1)] += w;
  };
  for (int64_t o = 0; o < out; ++o) {
    // torch's area_pixel_compute_source_index: the source position of the output's centre,
    // clamped at 0 for linear modes only.
    double src = (static_cast<double>(o) + 0.5) * scale - 0.5;
    if (kind == Resize::kBilinear) {
      src = std::max(src, 0.0);
      const int64_t i0 = static_cast<int64_t>(src);
      const int64_t i1 = std::min(i0 + 1, in - 1);
      const double t = src - static_cast<double>(i0);
      add(o, i0, 1 - t);
      add(o, i1, t);
    } else {
      const int64_t i = static_cast<int64_t>(std::floor(src));
      const double t = src - static_cast<double>(i), a = -0.75;
      add(o, i - 1, cubic_far(t + 1, a));
      add(o, i, cubic_near(t, a));
      add(o, i + 1, cubic_near(1 - t, a));
      add(o, i + 2, cubic_far(2 - t, a));
    }
  }
  return {r.begin(), r.end()};
}

}  // namespace xattn::models
