#pragma once
// A 2-D convolution for the models' embeddings, as torch's nn.Conv2d (square kernel, one stride,
// zero padding, with bias), computed as im2col + one GEMM (OpenBLAS) per image:
//   y[b, oy, ox, o] = bias[o] + Σ_{c,ky,kx} W[o, c, ky, kx]·x[b, oy·s + ky - p, ox·s + kx - p, c]
// The input is a channels-last map [B, H, W, C] (a stage's tokens [B, H·W, C] as they are), the
// output rows [B·H'·W'] of channels-last tokens, so several convolutions of the same stride can
// write side by side into one [B, H'·W', sum of outs] tensor.

#include <cstdint>
#include <string>

#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::models {

class Conv2d {
 public:
  Conv2d() = default;
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding);

  int64_t out_channels() const { return out_; }
  int64_t kernel() const { return kernel_; }
  int64_t padding() const { return padding_; }
  // The output length along an axis of n input pixels: (n + 2p - k) / s + 1 (< 1 when k is
  // larger than the padded input).
  int64_t output_size(int64_t n) const { return (n + 2 * padding_ - kernel_) / stride_ + 1; }

  // Copies trained values in: weight [out, in, k, k], bias [out] (any float dtype and strides).
  // Throws xattn::Error naming `name` and both shapes.
  void load(const TensorView& weight, const TensorView& bias, const std::string& name);

  // x [B, H, W, in] contiguous f32; writes the output pixel (b, oy, ox)'s `out` values at
  // y + ((b·H' + oy)·W' + ox)·ldy, for H' = output_size(H), W' = output_size(W) >= 1.
  void forward(const float* x, int64_t B, int64_t H, int64_t W, float* y, int64_t ldy) const;

 private:
  int64_t in_ = 0, out_ = 0, kernel_ = 1, stride_ = 1, padding_ = 0;
  nn::Tensor weight_, bias_;  // [out, in·k·k] (the Conv2d weight flattened), [out]
};

}  // namespace xattn::models
