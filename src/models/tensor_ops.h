#pragma once
// The glue between the models' layers: token tensors [B, L, width] sliced, joined and added,
// layers applied to them, and the resize matrices of torch's interpolate.

#include <cstdint>
#include <string>
#include <vector>

#include "xattn/nn/layer_norm.h"
#include "xattn/nn/linear.h"
#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::models {

using nn::Tensor;

// Throws xattn::Error naming `arg` unless x is a float array [B, L, width] (with B = batch when
// batch >= 0).
void check_tokens(const TensorView& x, const std::string& arg, int64_t width, int64_t batch = -1);
// x as an owned f32 [B, L, width] tensor, after check_tokens.
Tensor tokens_of(const TensorView& x, const std::string& arg, int64_t width, int64_t batch = -1);

// x itself when it already is f32 with adjacent elements along its last dim, else
// tokens_of(x, ...) kept in `copy`: for inputs the kernel and BLAS can read in place.
TensorView f32_tokens(const TensorView& x, const std::string& arg, int64_t width, Tensor& copy,
                      int64_t batch = -1);

Tensor slice_tokens(const Tensor& x, int64_t begin, int64_t end);  // x[:, begin:end]
Tensor concat_tokens(const Tensor& a, const Tensor& b);            // [a | b] along L
void add_into(Tensor& x, const Tensor& y);                         // x += y, same shapes
Tensor apply(const nn::Linear& layer, const Tensor& x);            // over the last dim
Tensor apply(const nn::LayerNorm& layer, const Tensor& x);
void gelu_inplace(Tensor& x);                                      // exact (erf) GELU

// C[m, n] = A[m, k]·B[k, n] (or ·Bᵀ with B [n, k] when b_transposed; Aᵀ with A [k, m] when
// a_transposed), added to C when accumulate, row-major with leading dimensions lda, ldb, ldc:
// OpenBLAS's sgemm.
struct Gemm {
  int64_t m, n, k;
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
  bool b_transposed = false;
  bool a_transposed = false;
  bool accumulate = false;
};
void gemm(const Gemm& g);

// The [out, in] matrix R with y = R·x for torch.nn.functional.interpolate along one axis
// (align_corners=False, no antialiasing): bilinear or bicubic (A = -0.75, edges clamped).
enum class Resize { kBilinear, kBicubic };
std::vector<float> resize_matrix(int64_t in, int64_t out, Resize kind);

}  // namespace xattn::models
