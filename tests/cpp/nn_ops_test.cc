// Linear, LayerNorm and GELU against float64 / long double computations written here from their
// definitions, with error bounds derived from f32 rounding; and their argument errors. KVCache's
// selection of rows (a beam search's).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "nn/rows.h"
#include "xattn/error.h"
#include "xattn/half.h"
#include "xattn/nn/activations.h"
#include "xattn/nn/kv_cache.h"
#include "xattn/nn/layer_norm.h"
#include "xattn/nn/linear.h"

namespace xattn::nn {
namespace {

using ::testing::HasSubstr;

constexpr double kU = 0x1p-24;  // f32 unit roundoff
constexpr float kInf = std::numeric_limits<float>::infinity();

// ---- test support -----------------------------------------------------------------------------

// How a logical tensor lies in memory.
enum class Lay {
  kContiguous,    // row-major
  kRowPadded,     // row-major with a gap after each row: a matrix with ld > width
  kPaddedDims,    // a gap after every dim: leading dims of unrelated strides
  kTransposed,    // the last dim outermost in memory: a non-unit element stride
  kReversedRows,  // the second-last dim walks backwards (a negative stride)
};
constexpr Lay kLays[] = {Lay::kContiguous, Lay::kRowPadded, Lay::kPaddedDims, Lay::kTransposed,
                         Lay::kReversedRows};
constexpr DType kDtypes[] = {DType::kF32, DType::kF16, DType::kBF16};

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (const int64_t s : shape) n *= s;
  return n;
}

std::string describe(const std::vector<int64_t>& shape, DType t, Lay lay) {
  std::ostringstream os;
  os << "shape [";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "] " << dtype_name(t) << " lay " << static_cast<int>(lay);
  return os.str();
}

// An owned tensor of any float dtype and layout, filled from logical row-major values.
class Strided {
 public:
  Strided(std::vector<int64_t> shape, DType dtype, Lay lay)
      : shape_(std::move(shape)), dtype_(dtype) {
    const int rank = static_cast<int>(shape_.size());
    layout_.rank = rank;
    int64_t stride = 1;
    for (int m = rank - 1; m >= 0; --m) {  // m: position in memory order, innermost last
      const int d = lay == Lay::kTransposed ? rank - 1 - m : m;
      int64_t pad = 0;
      if (lay == Lay::kRowPadded && d == rank - 1) pad = 3;
      if (lay == Lay::kPaddedDims || lay == Lay::kTransposed) pad = 1 + d % 2;
      layout_.shape[d] = shape_[d];
      layout_.strides[d] = stride;
      stride *= shape_[d] + pad;
    }
    if (lay == Lay::kReversedRows && rank >= 2 && shape_[rank - 2] > 0) {
      base_ = (shape_[rank - 2] - 1) * layout_.strides[rank - 2];
      layout_.strides[rank - 2] = -layout_.strides[rank - 2];
    }
    storage_.assign(static_cast<size_t>(stride * dtype_size(dtype_) / 4 + 2), 0.0f);
  }

  // Stores the values rounded to the dtype; values() then holds what was stored.
  void fill(const std::vector<double>& values) {
    values_.clear();
    for (int64_t i = 0; i < static_cast<int64_t>(values.size()); ++i) {
      char* p = bytes() + offset_of(i) * dtype_size(dtype_);
      const float f = static_cast<float>(values[i]);
      if (dtype_ == DType::kF32) {
        std::memcpy(p, &f, 4);
        values_.push_back(f);
      } else {
        const uint16_t h = dtype_ == DType::kF16 ? float_to_f16(f) : float_to_bf16(f);
        std::memcpy(p, &h, 2);
        values_.push_back(dtype_ == DType::kF16 ? f16_to_float(h) : bf16_to_float(h));
      }
    }
  }
  const std::vector<double>& values() const { return values_; }
  TensorView view() const { return {const_cast<Strided*>(this)->bytes(), dtype_, layout_}; }

 private:
  char* bytes() { return reinterpret_cast<char*>(storage_.data()) + base_ * dtype_size(dtype_); }
  int64_t offset_of(int64_t flat) const {
    int64_t off = 0;
    for (int d = layout_.rank - 1; d >= 0; --d) {
      off += flat % shape_[d] * layout_.strides[d];
      flat /= shape_[d];
    }
    return off;
  }

  std::vector<int64_t> shape_;
  DType dtype_;
  Layout layout_;
  int64_t base_ = 0;
  std::vector<float> storage_;
  std::vector<double> values_;
};

std::vector<double> normals(std::mt19937_64& rng, int64_t n, double mean = 0, double sd = 1) {
  std::normal_distribution<double> dist(mean, sd);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = dist(rng);
  return v;
}

// Leading dims of rank 0-3, sizes 0 (rarely), 1, 2, 3 or 5.
std::vector<int64_t> random_lead(std::mt19937_64& rng) {
  static constexpr int64_t kSizes[] = {0, 1, 1, 2, 2, 3, 3, 5, 5, 5, 5, 5};
  std::vector<int64_t> lead(rng() % 4);
  for (int64_t& s : lead) s = kSizes[rng() % std::size(kSizes)];
  return lead;
}

void expect_error(const std::function<void()>& call, std::initializer_list<const char*> fragments) {
  try {
    call();
    ADD_FAILURE() << "no xattn::Error";
  } catch (const Error& e) {
    for (const char* f : fragments) EXPECT_THAT(e.what(), HasSubstr(f));
  }
}

std::vector<float> values_of(const Tensor& t) { return {t.data(), t.data() + t.numel()}; }

// ---- as_rows: the input path of every layer -----------------------------------------------------

TEST(LinearRows, ViewsF32MatricesInPlaceAndCopiesEverythingElse) {
  std::mt19937_64 rng(5);
  const int64_t width = 5;
  for (const std::vector<int64_t>& lead : std::vector<std::vector<int64_t>>{
           {4}, {2, 3}, {2, 1, 3}, {3, 2, 2}}) {
    for (const DType t : kDtypes) {
      for (const Lay lay : kLays) {
        std::vector<int64_t> shape = lead;
        shape.push_back(width);
        SCOPED_TRACE(describe(shape, t, lay));
        Strided x(shape, t, lay);
        x.fill(normals(rng, product(shape)));
        std::vector<float> scratch;
        const RowsView rows = as_rows(x.view(), "x", scratch);
        ASSERT_EQ(rows.rows, product(lead));
        ASSERT_EQ(rows.cols, width);
        const bool matrix = lay == Lay::kContiguous || lay == Lay::kRowPadded;
        if (t == DType::kF32 && matrix) {
          EXPECT_EQ(rows.data, x.view().data);
          EXPECT_EQ(rows.ld, lay == Lay::kRowPadded ? width + 3 : width);
        } else if (t != DType::kF32 || lay != Lay::kPaddedDims || lead.size() > 1) {
          // (kPaddedDims with one leading dim is still a matrix; every other case is not.)
          EXPECT_EQ(rows.data, scratch.data());
          EXPECT_EQ(rows.ld, width);
        }
        for (int64_t r = 0; r < rows.rows; ++r)
          for (int64_t c = 0; c < width; ++c)
            ASSERT_EQ(rows.data[r * rows.ld + c], x.values()[r * width + c]) << r << ", " << c;
      }
    }
  }
}

// ---- Linear -----------------------------------------------------------------------------------

// Bound on |fl(y) - y| for y = b + Σ_k x_k·w_k (K products), whatever order and blocking the
// GEMM sums in, FMA or not: every term passes through at most K + 1 roundings (its product, then
// one per addition on its way up the summation tree, the bias addition included), so
//   |fl(y) - y| ≤ γ_{K+1}·(|b| + Σ|x_k||w_k|),  γ_n = n·u / (1 - n·u),  u = 2⁻²⁴
// (Higham, Accuracy and Stability, §3.1). The inputs are exact: f16/bf16 widen to f32 exactly,
// and the reference reads the very values stored. The float64 reference's own error
// (K·2⁻⁵³ relative) is 2⁻²⁹ of the bound.
double gamma(int64_t n) { return n * kU / (1 - n * kU); }

// Checks y [rows, out] (row stride ld_y) against the float64 reference from x [rows, in].
void expect_linear_close(const Linear& lin, const std::vector<double>& x, int64_t rows,
                         const float* y, int64_t ld_y) {
  const int64_t in = lin.in_features(), out = lin.out_features();
  const float* w = lin.weight().data();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double exact = lin.has_bias() ? lin.bias().data()[o] : 0.0;
      double magnitude = std::abs(exact);
      for (int64_t k = 0; k < in; ++k) {
        exact += x[r * in + k] * w[o * in + k];
        magnitude += std::abs(x[r * in + k] * w[o * in + k]);
      }
      const double got = y[r * ld_y + o];
      ASSERT_LE(std::abs(got - exact), gamma(in + 1) * magnitude)
          << "row " << r << " col " << o << ": got " << got << ", want " << exact;
    }
  }
}

void check_linear(std::vector<int64_t> lead, int64_t in, int64_t out, bool bias, DType t, Lay lay,
                  std::mt19937_64& rng) {
  std::vector<int64_t> shape = lead;
  shape.push_back(in);
  SCOPED_TRACE(describe(shape, t, lay) + " out " + std::to_string(out) + " bias " +
               std::to_string(bias));
  Linear lin(in, out, bias, rng());
  Strided x(shape, t, lay);
  x.fill(normals(rng, product(shape)));
  const Tensor y = lin(x.view());
  std::vector<int64_t> want_shape = lead;
  want_shape.push_back(out);
  ASSERT_EQ(y.shape(), want_shape);
  expect_linear_close(lin, x.values(), product(lead), y.data(), out);
}

TEST(Linear, MatchesFloat64AtTheEdges) {
  std::mt19937_64 rng(11);
  struct Case {
    std::vector<int64_t> lead;
    int64_t in, out;
  };
  const Case cases[] = {{{}, 1, 1},     {{}, 7, 3},        {{0}, 5, 3},      {{1}, 1, 7},
                        {{2, 0, 3}, 4, 4}, {{1, 1, 1}, 33, 1}, {{3, 1, 2}, 7, 5}, {{1}, 64, 65}};
  for (const Case& c : cases)
    for (const bool bias : {false, true})
      for (const DType t : kDtypes)
        for (const Lay lay : kLays) check_linear(c.lead, c.in, c.out, bias, t, lay, rng);
}

TEST(Linear, MatchesFloat64OverRandomShapesDtypesAndLayouts) {
  std::mt19937_64 rng(12);
  static constexpr int64_t kWidths[] = {1, 2, 3, 7, 16, 33, 64, 97, 256};
  for (int i = 0; i < 300; ++i) {
    const int64_t in = kWidths[rng() % std::size(kWidths)];
    const int64_t out = kWidths[rng() % std::size(kWidths)];
    check_linear(random_lead(rng), in, out, i % 2 == 1, kDtypes[i % 3], kLays[i / 3 % 5], rng);
  }
}

TEST(Linear, ForwardWritesOnlyTheColsOfEachRow) {
  std::mt19937_64 rng(13);
  const int64_t in = 6, out = 5, ld_x = in + 4, ld_y = out + 3;
  for (const bool bias : {false, true}) {
    for (const int64_t rows : {0, 1, 7}) {
      SCOPED_TRACE("bias " + std::to_string(bias) + " rows " + std::to_string(rows));
      const Linear lin(in, out, bias, rng());
      // NaN in x's gaps: read, they would poison the row. NaN in y's cols: without a bias the
      // GEMM must overwrite them (beta = 0), not add to them. 42 in y's gaps: to stay.
      std::vector<float> x(static_cast<size_t>(rows * ld_x), NAN);
      std::vector<double> logical = normals(rng, rows * in);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < in; ++k) x[r * ld_x + k] = static_cast<float>(logical[r * in + k]);
      for (double& v : logical) v = static_cast<float>(v);
      std::vector<float> y(static_cast<size_t>(rows * ld_y), 42.0f);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = 0; o < out; ++o) y[r * ld_y + o] = NAN;
      lin.forward({x.data(), rows, in, ld_x}, {y.data(), rows, out, ld_y});
      expect_linear_close(lin, logical, rows, y.data(), ld_y);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = out; o < ld_y; ++o) ASSERT_EQ(y[r * ld_y + o], 42.0f) << r << ", " << o;
    }
  }
}

TEST(Linear, LoadTakesAnyDtypeAndStrides) {
  std::mt19937_64 rng(14);
  Linear lin(4, 3, true);
  Strided w({3, 4}, DType::kBF16, Lay::kTransposed);
  Strided b({3}, DType::kF16, Lay::kContiguous);
  w.fill(normals(rng, 12));
  b.fill(normals(rng, 3));
  lin.load(w.view(), b.view());
  for (int i = 0; i < 12; ++i) EXPECT_EQ(lin.weight().data()[i], w.values()[i]) << i;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(lin.bias().data()[i], b.values()[i]) << i;
}

TEST(Linear, LoadErrorsNameTheArgumentAndBothShapes) {
  Linear with_bias(3, 5, true), no_bias(3, 5, false);
  std::vector<float> w(20, 0.5f), b(5, 0.25f);
  const TensorView w53 = view(w.data(), {5, 3}), b5 = view(b.data(), {5});
  expect_error([&] { with_bias.load(view(w.data(), {5, 4}), b5); },
               {"linear.weight: expected shape [5, 3], got [5, 4]"});
  expect_error([&] { with_bias.load(view(w.data(), {15}), b5); },
               {"linear.weight: expected shape [5, 3], got [15]"});
  expect_error([&] { with_bias.load(TensorView{}, b5); },
               {"linear.weight: is required", "[5, 3]", "got none"});
  expect_error([&] { with_bias.load(w53, TensorView{}); },
               {"linear.bias: is required", "[5]", "got none"});
  expect_error([&] { with_bias.load(w53, view(b.data(), {4})); },
               {"linear.bias: expected shape [5], got [4]"});
  expect_error([&] { no_bias.load(w53, b5); },
               {"linear.bias: expected none", "no bias", "got shape [5]"});
  expect_error([&] { with_bias.load(w53, {b.data(), DType::kBool, Layout::contiguous({5})}); },
               {"linear.bias", "bool"});
  expect_error([&] { with_bias.load(view(w.data(), {3, 5}), b5, "encoder.fc1"); },
               {"encoder.fc1.weight: expected shape [5, 3], got [3, 5]"});
  no_bias.load(w53, TensorView{});  // and the right arguments load
  with_bias.load(w53, b5);
}

TEST(Linear, FailedLoadKeepsTheOldParameters) {
  Linear lin(3, 5, true, 1);
  const std::vector<float> w0 = values_of(lin.weight()), b0 = values_of(lin.bias());
  std::vector<float> w(15, 0.5f), b(5, 0.25f);
  EXPECT_THROW(lin.load(view(w.data(), {5, 3}), view(b.data(), {4})), Error);
  EXPECT_EQ(values_of(lin.weight()), w0);
  EXPECT_EQ(values_of(lin.bias()), b0);
  lin.load(view(w.data(), {5, 3}), view(b.data(), {5}));
  EXPECT_EQ(values_of(lin.weight()), w);
  EXPECT_EQ(values_of(lin.bias()), b);
}

TEST(Linear, BadArgumentsThrow) {
  EXPECT_THROW(Linear(0, 3), Error);
  EXPECT_THROW(Linear(3, 0), Error);
  const Linear lin(4, 3);
  std::vector<float> x(40, 1.0f), y(40, 0.0f);
  expect_error([&] { lin.forward({x.data(), 2, 5, 5}, {y.data(), 2, 3, 3}); },
               {"x [rows, 4]", "got x [2, 5]"});
  expect_error([&] { lin.forward({x.data(), 2, 4, 4}, {y.data(), 2, 4, 4}); },
               {"y [rows, 3]", "y [2, 4]"});
  expect_error([&] { lin.forward({x.data(), 2, 4, 4}, {y.data(), 3, 3, 3}); },
               {"x [2, 4]", "y [3, 3]"});
  expect_error([&] { (void)lin(view(x.data(), {2, 5})); },
               {"x: last dim must equal in_features = 4, got 5"});
  expect_error([&] { (void)lin(TensorView{x.data(), DType::kBool, Layout::contiguous({2, 4})}); },
               {"x: must be float32, float16 or bfloat16, got bool"});
  expect_error([&] { (void)lin(TensorView{}); }, {"x: is required"});
}

// ---- LayerNorm --------------------------------------------------------------------------------

// The exact result from the stored inputs, in long double with two passes (64-bit mantissa: its
// own error is ~n·2⁻⁶⁴ relative, nothing at f32's scale), and the tolerance for each element:
//   |fl(y) - y| ≤ 8u·(|ẑ·w| + |b|),  ẑ = (x - mean)/√(var + eps) exact.
// Why 8u: from statistics accurate to ≪ u·σ (double sums: n·2⁻⁵³ relative), y takes at most
// seven f32 roundings: var + eps, sqrt, 1/· (together 2.5u on rstd: the sqrt halves the first),
// x - mean, ·rstd, ·w (5.5u on ẑ·w), + b (u on |ẑ·w| + |b|): 6.5u to first order. An
// implementation rounding once from double is within u/2; an unbiased variance (relative error
// 1/(2n)), a missing eps (eps/var) or single-pass f32 statistics are far outside. Added to it,
// the error of a mean summed in double, ≤ n·2⁻⁵³·mean|x| (Higham §4.2), times rstd·|w|: it
// matters only where x ≈ mean in a row far from zero, where 8u·|ẑ·w| is no longer larger.
// A row with var + eps = 0 (constant, eps = 0) gives ẑ = 0, as LayerNorm documents.
struct LayerNormReference {
  std::vector<double> y, tolerance;
};

LayerNormReference layer_norm_reference(const std::vector<double>& x, int64_t n, float eps,
                                        const float* w, const float* b) {
  LayerNormReference ref;
  const int64_t rows = n == 0 ? 0 : static_cast<int64_t>(x.size()) / n;
  for (int64_t r = 0; r < rows; ++r) {
    long double sum = 0, squares = 0;
    for (int64_t i = 0; i < n; ++i) sum += x[r * n + i];
    const long double mean = sum / n;
    for (int64_t i = 0; i < n; ++i) squares += (x[r * n + i] - mean) * (x[r * n + i] - mean);
    long double abs_sum = 0;
    for (int64_t i = 0; i < n; ++i) abs_sum += std::abs(x[r * n + i]);
    const long double var = squares / n + eps;
    const long double rstd = var > 0 ? 1 / std::sqrt(var) : 0;
    for (int64_t i = 0; i < n; ++i) {
      const long double wi = w ? w[i] : 1.0f, bias = b ? b[i] : 0.0f;
      const long double zw = (x[r * n + i] - mean) * rstd * wi;
      ref.y.push_back(static_cast<double>(zw + bias));
      ref.tolerance.push_back(static_cast<double>(8 * kU * (std::abs(zw) + std::abs(bias)) +
                                                  0x1p-53L * abs_sum * rstd * std::abs(wi)));
    }
  }
  return ref;
}

void expect_layer_norm_close(const LayerNorm& ln, const std::vector<double>& x, const float* y,
                             int64_t ld_y) {
  const int64_t n = ln.normalized_size();
  const bool affine = ln.elementwise_affine();
  const LayerNormReference ref = layer_norm_reference(
      x, n, ln.eps(), affine ? ln.weight().data() : nullptr, affine ? ln.bias().data() : nullptr);
  for (size_t j = 0; j < ref.y.size(); ++j) {
    const int64_t r = static_cast<int64_t>(j) / n, i = static_cast<int64_t>(j) % n;
    ASSERT_LE(std::abs(y[r * ld_y + i] - ref.y[j]), ref.tolerance[j])
        << "row " << r << " col " << i << ": got " << y[r * ld_y + i] << ", want " << ref.y[j];
  }
}

// A layer with trained-looking parameters (weight ~ N(1, 0.5), bias ~ N(0, 0.5)) when affine.
LayerNorm random_layer_norm(int64_t n, float eps, bool affine, std::mt19937_64& rng) {
  LayerNorm ln(n, eps, affine);
  if (affine) {
    std::vector<float> w(n), b(n);
    for (int64_t i = 0; i < n; ++i) {
      w[i] = static_cast<float>(normals(rng, 1, 1.0, 0.5)[0]);
      b[i] = static_cast<float>(normals(rng, 1, 0.0, 0.5)[0]);
    }
    ln.load(view(w.data(), {n}), view(b.data(), {n}));
  }
  return ln;
}

TEST(LayerNorm, MatchesFloat64OverRandomRowsDtypesAndLayouts) {
  std::mt19937_64 rng(21);
  static constexpr int64_t kSizes[] = {1, 2, 3, 7, 64, 129, 768};
  static constexpr float kEps[] = {1e-5f, 1e-3f, 0.5f, 0.0f};
  static constexpr double kOffsets[] = {0.0, 3.0, -1e4};
  static constexpr double kScales[] = {1e-3, 1.0, 100.0};
  for (int i = 0; i < 300; ++i) {
    const int64_t n = kSizes[rng() % std::size(kSizes)];
    const float eps = n == 1 ? 1e-5f : kEps[rng() % std::size(kEps)];  // n = 1, eps = 0: 0/0
    const bool affine = i % 2 == 1;
    const DType t = kDtypes[i % 3];
    const Lay lay = kLays[i / 3 % 5];
    std::vector<int64_t> shape = random_lead(rng);
    shape.push_back(n);
    SCOPED_TRACE(describe(shape, t, lay) + " eps " + std::to_string(eps) + " affine " +
                 std::to_string(affine));
    const LayerNorm ln = random_layer_norm(n, eps, affine, rng);
    const double offset = kOffsets[rng() % 3], scale = kScales[rng() % 3];
    Strided x(shape, t, lay);
    x.fill(normals(rng, product(shape), offset, scale));
    const Tensor y = ln(x.view());
    ASSERT_EQ(y.shape(), shape);
    expect_layer_norm_close(ln, x.values(), y.data(), n);
  }
}

TEST(LayerNorm, NormalizesARowFarFromZero) {
  std::mt19937_64 rng(22);
  const int64_t n = 1024;
  for (const double offset : {1e4, -1e6}) {
    SCOPED_TRACE(offset);
    std::vector<double> x = normals(rng, n, offset, 1.0);
    std::vector<float> xf(x.begin(), x.end());
    for (int64_t i = 0; i < n; ++i) x[i] = xf[i];
    const LayerNorm ln(n);
    const Tensor y = ln(view(xf.data(), {n}));
    expect_layer_norm_close(ln, x, y.data(), n);
    // And, independently of the reference: mean 0 and variance var/(var + eps) ≈ 1.
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; ++i) mean += y.data()[i] / n;
    for (int64_t i = 0; i < n; ++i) var += (y.data()[i] - mean) * (y.data()[i] - mean) / n;
    EXPECT_NEAR(mean, 0.0, 1e-5);
    EXPECT_NEAR(var, 1.0, 1e-4);
  }
}

TEST(LayerNorm, ConstantRowGivesTheBias) {
  std::mt19937_64 rng(23);
  for (const float value : {0.0f, 3.7f, -1e30f, 3e38f, 1e-42f}) {
    for (const float eps : {1e-5f, 0.0f}) {
      for (const int64_t n : {1, 5, 768}) {
        SCOPED_TRACE(std::to_string(value) + " eps " + std::to_string(eps) + " n " +
                     std::to_string(n));
        const std::vector<float> x(3 * n, value);
        const LayerNorm affine = random_layer_norm(n, eps, true, rng);
        const Tensor y = affine(view(x.data(), {n}));
        EXPECT_EQ(values_of(y), values_of(affine.bias()));
        const Tensor z = LayerNorm(n, eps, false)(view(x.data(), {3, 1, n}));
        for (const float v : values_of(z)) ASSERT_EQ(v, 0.0f);
      }
    }
  }
}

TEST(LayerNorm, HugeFiniteValuesStayFinite) {
  // f32 squares of 1e20 overflow; the result must not.
  std::mt19937_64 rng(24);
  const int64_t n = 257;
  std::uniform_real_distribution<double> uniform(-3.4e38, 3.4e38);
  std::vector<float> xf(n);
  for (float& v : xf) v = static_cast<float>(uniform(rng));
  const std::vector<double> x(xf.begin(), xf.end());
  const LayerNorm ln = random_layer_norm(n, 1e-5f, true, rng);
  const Tensor y = ln(view(xf.data(), {n}));
  for (const float v : values_of(y)) ASSERT_TRUE(std::isfinite(v));
  expect_layer_norm_close(ln, x, y.data(), n);
}

TEST(LayerNorm, EpsIsAddedToTheVariance) {
  // Alternating ±a: mean 0, var a², so y = ±a / √(a² + eps), a closed form of its own.
  const float a = 1e-3f;
  const int64_t n = 8;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = i % 2 ? -a : a;
  for (const float eps : {0.0f, 1e-7f, 1e-6f, 1e-2f}) {
    const Tensor y = LayerNorm(n, eps, false)(view(x.data(), {n}));
    const double want = a / std::sqrt(static_cast<double>(a) * a + eps);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(y.data()[i], i % 2 ? -want : want, 8 * kU * want) << "eps " << eps;
  }
}

TEST(LayerNorm, WorksInPlaceAndLeavesRowGapsAlone) {
  std::mt19937_64 rng(25);
  const int64_t n = 33, rows = 6, ld = n + 5;
  const LayerNorm ln = random_layer_norm(n, 1e-5f, true, rng);
  std::vector<float> x(rows * ld, 42.0f);
  std::vector<double> logical = normals(rng, rows * n, 2.0, 3.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) x[r * ld + i] = static_cast<float>(logical[r * n + i]);
  for (double& v : logical) v = static_cast<float>(v);
  std::vector<float> y(rows * ld, 42.0f);
  ln.forward({x.data(), rows, n, ld}, {y.data(), rows, n, ld});
  expect_layer_norm_close(ln, logical, y.data(), ld);
  ln.forward({x.data(), rows, n, ld}, {x.data(), rows, n, ld});
  for (size_t j = 0; j < x.size(); ++j) ASSERT_EQ(x[j], y[j]) << j;  // same bits, gaps still 42
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = n; i < ld; ++i) ASSERT_EQ(y[r * ld + i], 42.0f);
}

TEST(LayerNorm, LoadErrorsNameTheArgumentAndBothShapes) {
  LayerNorm affine(4), plain(4, 1e-5f, false);
  std::vector<float> w(8, 2.0f), b(8, 0.5f);
  const TensorView w4 = view(w.data(), {4}), b4 = view(b.data(), {4});
  expect_error([&] { affine.load(view(w.data(), {5}), b4); },
               {"layer_norm.weight: expected shape [4], got [5]"});
  expect_error([&] { affine.load(view(w.data(), {1, 4}), b4); },
               {"layer_norm.weight: expected shape [4], got [1, 4]"});
  expect_error([&] { affine.load(w4, view(b.data(), {2, 2})); },
               {"layer_norm.bias: expected shape [4], got [2, 2]"});
  expect_error([&] { affine.load(TensorView{}, b4); }, {"layer_norm.weight: is required", "[4]"});
  expect_error([&] { affine.load(w4, TensorView{}); }, {"layer_norm.bias: is required", "[4]"});
  expect_error([&] { plain.load(w4, TensorView{}); },
               {"layer_norm.weight: expected none", "elementwise affine", "got shape [4]"});
  expect_error([&] { plain.load(TensorView{}, b4); }, {"layer_norm.bias: expected none", "[4]"});
  expect_error([&] { affine.load(w4, view(b.data(), {8}), "encoder.ln1"); },
               {"encoder.ln1.bias: expected shape [4], got [8]"});
  // A failed load leaves the old parameters; a good one replaces them.
  EXPECT_EQ(values_of(affine.weight()), std::vector<float>(4, 1.0f));
  EXPECT_EQ(values_of(affine.bias()), std::vector<float>(4, 0.0f));
  affine.load(w4, b4);
  EXPECT_EQ(values_of(affine.weight()), std::vector<float>(4, 2.0f));
  EXPECT_EQ(values_of(affine.bias()), std::vector<float>(4, 0.5f));
  plain.load(TensorView{}, TensorView{});
}

TEST(LayerNorm, BadArgumentsThrow) {
  EXPECT_THROW(LayerNorm(0), Error);
  expect_error([] { LayerNorm(4, -1e-9f); }, {"eps must be finite and >= 0, got -1e-09"});
  EXPECT_THROW(LayerNorm(4, NAN), Error);
  EXPECT_THROW(LayerNorm(4, kInf), Error);
  const LayerNorm ln(4);
  std::vector<float> x(40, 1.0f), y(40, 0.0f);
  expect_error([&] { ln.forward({x.data(), 2, 5, 5}, {y.data(), 2, 4, 4}); },
               {"[rows, 4]", "x [2, 5]"});
  expect_error([&] { ln.forward({x.data(), 2, 4, 4}, {y.data(), 2, 5, 5}); }, {"y [2, 5]"});
  expect_error([&] { ln.forward({x.data(), 2, 4, 4}, {y.data(), 3, 4, 4}); }, {"y [3, 4]"});
  expect_error([&] { (void)ln(view(x.data(), {2, 3})); },
               {"x: last dim must equal normalized_size = 4, got 3"});
  expect_error([&] { (void)ln(TensorView{}); }, {"x: is required"});
}

// ---- GELU -------------------------------------------------------------------------------------

// The exact values in long double, from the definitions: torch's formulas as written where
// 1 + erf / 1 + tanh keep ≥ 55 of long double's 64 bits (x > -3), and the identities
//   1 + erf(z) = erfc(-z),  1 + tanh(u) = 2 / (1 + e^(-2u))
// below, where the sum cancels away (1 + erfl(-9) is 0 in long double).
long double gelu_erf_exact(float xf) {
  const long double x = xf;
  const long double z = x / std::sqrt(2.0L);
  return xf > -3 ? 0.5L * x * (1 + std::erf(z)) : 0.5L * x * std::erfc(-z);
}

long double gelu_tanh_exact(float xf) {
  const long double x = xf;
  const long double u = std::sqrt(2 / std::acos(-1.0L)) * (x + 0.044715L * x * x * x);
  return xf > -3 ? 0.5L * x * (1 + std::tanh(u)) : x / (1 + std::exp(-2 * u));
}

// |got - want| in units of the f32 spacing at |want| (2^(e-23), e = its exponent, at least the
// subnormal spacing 2⁻¹⁴⁹).
double ulps(float got, long double want) {
  const int e = want == 0 ? -126 : std::max(std::ilogb(want), -126);
  return static_cast<double>(std::abs(got - want) / std::ldexp(1.0L, e - 23));
}

// The bound, for every float x: 0.5 ulp (the one rounding to f32) plus the double evaluation's
// error. That error is at most (2|u| + 16)·2⁻⁵³ relative: a few roundings and libm's erfc/exp
// (a few double ulps), and for the tanh form the relative error of u, amplified 2|u|(1 - σ(2u))
// times by σ(2u) = 1/(1 + e^(-2u)); |2u| < 104 wherever the result is not below f32's smallest
// subnormal. In f32 ulps that is ≤ 120·2⁻⁵³·2²⁴ < 3e-7; 1e-5 leaves room for libm's claims.
constexpr double kGeluMaxUlps = 0.5 + 1e-5;

std::vector<float> gelu_grid() {
  std::vector<float> x;
  // Every sign and exponent: float bit patterns 4093 apart (a prime), NaNs skipped.
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += 4093) {
    const float f = bits_to_float(static_cast<uint32_t>(bits));
    if (!std::isnan(f)) x.push_back(f);
  }
  for (double v = -14; v <= 14; v += 1.0 / 128) x.push_back(static_cast<float>(v));  // the bend
  for (const float v : {0.0f, -0.0f, 1e-45f, -1e-45f, 1e-38f, -1e-38f, 1e-30f, -1e-30f, 1e4f,
                        -1e4f, 3.4028235e38f, -3.4028235e38f})
    x.push_back(v);
  return x;
}

void expect_gelu_accurate(GeluApproximation a, long double (*exact)(float)) {
  std::vector<float> x = gelu_grid();
  std::vector<float> y = x;
  gelu_inplace(y.data(), static_cast<int64_t>(y.size()), a);
  double worst = 0;
  float worst_x = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isinf(x[i])) continue;
    ASSERT_FALSE(std::isnan(y[i])) << x[i];
    const double e = ulps(y[i], exact(x[i]));
    if (e > worst) worst = e, worst_x = x[i];
  }
  EXPECT_LE(worst, kGeluMaxUlps) << "at x = " << worst_x;
}

TEST(Gelu, ExactFormWithinHalfAnUlpOfFloat64) {
  expect_gelu_accurate(GeluApproximation::kNone, gelu_erf_exact);
}

TEST(Gelu, TanhFormWithinHalfAnUlpOfFloat64) {
  expect_gelu_accurate(GeluApproximation::kTanh, gelu_tanh_exact);
}

TEST(Gelu, LimitsAndSpecialValues) {
  for (const GeluApproximation a : {GeluApproximation::kNone, GeluApproximation::kTanh}) {
    SCOPED_TRACE(static_cast<int>(a));
    std::vector<float> x = {kInf, -kInf, 1e4f, -1e4f, 3.4028235e38f, -3.4028235e38f, NAN, 0.0f,
                            -0.0f};
    gelu_inplace(x.data(), static_cast<int64_t>(x.size()), a);
    EXPECT_EQ(x[0], kInf);
    EXPECT_EQ(x[1], 0.0f);
    EXPECT_EQ(x[2], 1e4f);
    EXPECT_EQ(x[3], 0.0f);
    EXPECT_EQ(x[4], 3.4028235e38f);
    EXPECT_EQ(x[5], 0.0f);
    EXPECT_TRUE(std::isnan(x[6]));
    EXPECT_EQ(x[7], 0.0f);
    EXPECT_TRUE(x[8] == 0.0f && std::signbit(x[8]));
  }
}

TEST(Gelu, TensorFormTakesAnyDtypeAndLayout) {
  std::mt19937_64 rng(31);
  for (const DType t : kDtypes) {
    for (const Lay lay : kLays) {
      const std::vector<int64_t> shape = {2, 3, 5};
      SCOPED_TRACE(describe(shape, t, lay));
      Strided x(shape, t, lay);
      x.fill(normals(rng, 30, 0.0, 3.0));
      for (const GeluApproximation a : {GeluApproximation::kNone, GeluApproximation::kTanh}) {
        const Tensor y = gelu(x.view(), a);
        ASSERT_EQ(y.shape(), shape);
        for (int i = 0; i < 30; ++i) {
          const float xi = static_cast<float>(x.values()[i]);
          const long double want =
              a == GeluApproximation::kNone ? gelu_erf_exact(xi) : gelu_tanh_exact(xi);
          ASSERT_LE(ulps(y.data()[i], want), kGeluMaxUlps) << i;
        }
      }
    }
  }
  const float one = 1.0f;
  EXPECT_EQ(gelu(view(&one, {0})).shape(), std::vector<int64_t>{0});
  EXPECT_EQ(gelu(view(&one, {4, 0, 2})).shape(), (std::vector<int64_t>{4, 0, 2}));
}

TEST(Gelu, BadArgumentsThrow) {
  std::vector<float> x(4, 1.0f);
  gelu_inplace(nullptr, 0, GeluApproximation::kNone);
  expect_error([&] { gelu_inplace(x.data(), -1, GeluApproximation::kNone); }, {"n", "-1"});
  expect_error([&] { gelu_inplace(nullptr, 4, GeluApproximation::kTanh); }, {"null"});
  expect_error([&] { (void)gelu(TensorView{}); }, {"x: is required"});
  expect_error([&] { (void)gelu(TensorView{x.data(), DType::kBool, Layout::contiguous({4})}); },
               {"x:", "bool"});
}

// A beam search keeps some hypotheses and drops others: each kept row takes its parent's
// history, whatever the capacity; a wrong selection changes nothing.
TEST(KVCacheSelect, RowsTakeTheirParentsHistory) {
  KVCache cache(3, 1, 2, 1);  // capacity 1: the appends below grow it
  for (int step = 0; step < 3; ++step) {
    std::vector<float> k(3 * 2), v(3 * 2);
    for (int n = 0; n < 3; ++n)
      for (int e = 0; e < 2; ++e) k[n * 2 + e] = 100.0f * n + 10.0f * step + e, v[n * 2 + e] = -k[n * 2 + e];
    cache.append(k.data(), v.data(), 1);
  }
  cache.select({2, 0, 0});
  const TensorView keys = cache.keys(), values = cache.values();
  const auto at = [](const TensorView& t, int64_t n, int64_t l, int64_t e) {
    return static_cast<const float*>(t.data)[n * t.stride(0) + l * t.stride(2) + e];
  };
  const int parents[3] = {2, 0, 0};
  for (int n = 0; n < 3; ++n)
    for (int l = 0; l < 3; ++l)
      for (int e = 0; e < 2; ++e) {
        EXPECT_EQ(at(keys, n, l, e), 100.0f * parents[n] + 10.0f * l + e);
        EXPECT_EQ(at(values, n, l, e), -at(keys, n, l, e));
      }
  EXPECT_THROW(cache.select({0, 1}), Error);
  EXPECT_THROW(cache.select({0, 1, 3}), Error);
  EXPECT_EQ(at(cache.keys(), 0, 2, 1), 221.0f);  // unchanged
}

}  // namespace
}  // namespace xattn::nn
