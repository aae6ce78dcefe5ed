#pragma once
// y = x·Wᵀ + b, PyTorch's nn.Linear, with the product from BLAS (OpenBLAS through CBLAS).

#include <cstdint>
#include <string_view>

#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::nn {

// `rows` rows of `cols` f32 values; row r starts at data + r·ld, its elements are adjacent.
struct RowsView {
  const float* data = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;
};
struct MutableRowsView {
  float* data = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;
};

class Linear {
 public:
  Linear() = default;
  // Weights drawn as PyTorch draws them, U(-1/√in, 1/√in), from a fixed seed: a new layer is
  // reproducible, and load() replaces its values anyway.
  Linear(int64_t in_features, int64_t out_features, bool bias = true, uint64_t seed = 0);

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  bool has_bias() const { return !bias_.empty(); }
  const Tensor& weight() const { return weight_; }  // [out, in]
  const Tensor& bias() const { return bias_; }      // [out], empty without bias

  // Copies trained values in (f32, f16 or bf16, any strides): weight [out, in], bias [out]. The
  // bias must be present exactly when the layer has one. Throws xattn::Error naming `name`.
  void load(const TensorView& weight, const TensorView& bias, std::string_view name = "linear");

  // y = x·Wᵀ + b, one GEMM over all rows. x.cols = in_features, y.cols = out_features, same rows.
  void forward(RowsView x, MutableRowsView y) const;

  // x [..., in] (f32, f16 or bf16, any strides, rank 1-4) -> [..., out] in f32.
  Tensor operator()(const TensorView& x) const;

 private:
  int64_t in_ = 0, out_ = 0;
  Tensor weight_, bias_;
};

// Copies `src` (any float dtype, any strides) into `dst`, which must have its shape; throws
// xattn::Error naming `name` and both shapes when `src` is absent or its shape differs.
void copy_into(const TensorView& src, Tensor& dst, std::string_view name);

// For a parameter the layer does not have: throws xattn::Error naming `name`, `why` and the
// given shape when `src` is present.
void require_absent(const TensorView& src, std::string_view name, std::string_view why);

}  // namespace xattn::nn
