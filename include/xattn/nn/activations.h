#pragma once
// Elementwise activations of the layers, computed in f32 out of f32 in.

#include <cstdint>

#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::nn {

// torch.nn.GELU's approximate='none' and approximate='tanh'.
enum class GeluApproximation { kNone, kTanh };

// x[i] = gelu(x[i]) for i < n:
//   kNone: 0.5·x·(1 + erf(x/√2))
//   kTanh: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
// Within half an f32 ulp (plus ~1e-7 ulp) of the exact value, for every float: gelu(+inf) = +inf,
// gelu(-inf) = -0, NaN stays NaN. Throws xattn::Error for n < 0, or x null with n > 0.
void gelu_inplace(float* x, int64_t n, GeluApproximation a);

// x (f32, f16 or bf16, any strides, rank 1-4) -> gelu(x) in f32, x's shape.
Tensor gelu(const TensorView& x, GeluApproximation a = GeluApproximation::kNone);

}  // namespace xattn::nn
