#pragma once
// PyTorch's nn.LayerNorm over the last dimension (a 1-D normalized_shape):
//   y = (x - mean) / sqrt(var + eps) · weight + bias,  mean and biased var over the row.

#include <cstdint>
#include <string_view>

#include "xattn/nn/linear.h"
#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::nn {

class LayerNorm {
 public:
  LayerNorm() = default;
  // weight = 1 and bias = 0 when elementwise_affine, none otherwise. Throws xattn::Error for a
  // size below 1 or an eps that is negative or not finite.
  explicit LayerNorm(int64_t normalized_size, float eps = 1e-5f, bool elementwise_affine = true);

  int64_t normalized_size() const { return size_; }
  float eps() const { return eps_; }
  bool elementwise_affine() const { return !weight_.empty(); }
  const Tensor& weight() const { return weight_; }  // [normalized_size], empty without affine
  const Tensor& bias() const { return bias_; }      // [normalized_size], empty without affine

  // Copies trained values in (f32, f16 or bf16, any strides), both [normalized_size]; both are
  // required with elementwise_affine and refused without. Throws xattn::Error naming `name`,
  // and then leaves the layer as it was.
  void load(const TensorView& weight, const TensorView& bias, std::string_view name = "layer_norm");

  // Normalizes each row. x.cols = y.cols = normalized_size, same rows; y may be x itself (same
  // data and ld), not a partial overlap. A constant row gives the bias (never NaN, even with
  // eps = 0, where torch would give 0/0).
  void forward(RowsView x, MutableRowsView y) const;

  // x [..., normalized_size] (f32, f16 or bf16, any strides, rank 1-4) -> the same shape in f32.
  Tensor operator()(const TensorView& x) const;

 private:
  int64_t size_ = 0;
  float eps_ = 1e-5f;
  Tensor weight_, bias_;
};

}  // namespace xattn::nn
