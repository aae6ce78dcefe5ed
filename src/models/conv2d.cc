// The convolution as im2col + GEMM: per image, the patches under each output pixel become the rows
// of a matrix [H'·W', in·k·k] in the weight's (c, ky, kx) order (zeros where the kernel hangs over
// the border), and y = patches·Wᵀ + b. One image at a time bounds the patch matrix's memory.

#include "xattn/models/conv2d.h"

#include <algorithm>
#include <string>

#include "models/tensor_ops.h"
#include "xattn/error.h"
#include "xattn/nn/linear.h"

namespace xattn::models {

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding)
    : in_(in), out_(out), kernel_(kernel), stride_(stride), padding_(padding),
      weight_({out, in * kernel * kernel}), bias_({out}) {}

void Conv2d::load(const TensorView& weight, const TensorView& bias, const std::string& name) {
  Tensor w({out_, in_, kernel_, kernel_}), b({out_});
  nn::copy_into(weight, w, name + ".weight");
  nn::copy_into(bias, b, name + ".bias");
  std::copy_n(w.data(), w.numel(), weight_.data());
  bias_ = std::move(b);
}

void Conv2d::forward(const float* x, int64_t B, int64_t H, int64_t W, float* y,
                     int64_t ldy) const {
  const int64_t k = kernel_, Ho = output_size(H), Wo = output_size(W), cols = in_ * k * k;
  Tensor patches({Ho * Wo, cols});
  for (int64_t b = 0; b < B; ++b) {
    const float* image = x + b * H * W * in_;
    float* row = patches.data();
    for (int64_t oy = 0; oy < Ho; ++oy)
      for (int64_t ox = 0; ox < Wo; ++ox, row += cols)
        for (int64_t c = 0; c < in_; ++c)
          for (int64_t ky = 0; ky < k; ++ky) {
            const int64_t iy = oy * stride_ + ky - padding_;
            for (int64_t kx = 0; kx < k; ++kx) {
              const int64_t ix = ox * stride_ + kx - padding_;
              const bool inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
              row[(c * k + ky) * k + kx] = inside ? image[(iy * W + ix) * in_ + c] : 0.0f;
            }
          }
    float* out = y + b * Ho * Wo * ldy;
    gemm({Ho * Wo, out_, cols, patches.data(), cols, weight_.data(), cols, out, ldy,
          /*b_transposed=*/true});
    for (int64_t r = 0; r < Ho * Wo; ++r)
      for (int64_t o = 0; o < out_; ++o) out[r * ldy + o] += bias_.data()[o];
  }
}

}  // namespace xattn::models
