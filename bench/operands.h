#pragma once
// The tensors of one benchmark case: Q, K, V filled with fixed pseudo-random values in one dtype,
// and the buffer xattn writes its output to. Allocated once per shape and dtype and reused for
// every thread count and for the baseline, so all of them see the same numbers.

#include <cstdint>

#include "bench/aligned_buffer.h"
#include "bench/suite.h"
#include "xattn/attention.h"
#include "xattn/tensor.h"

namespace xattn::bench {

class Operands {
 public:
  // dtype: kF32 (output f32) or kBF16 (output bf16). A value depends only on (tensor, index), so
  // the bf16 operands are the f32 ones rounded.
  Operands(const Shape& shape, DType dtype);

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }

  // Contiguous [B, H, L, D] views.
  TensorView q() const;
  TensorView k() const;
  TensorView v() const;
  MutableTensorView out();

  // Element i of xattn's output as float.
  float out_at(int64_t i) const;
  int64_t out_size() const { return shape_.B * shape_.Hq * shape_.Lq * shape_.Dv(); }

 private:
  Shape shape_;
  DType dtype_;
  // One buffer per tensor, 2 or 4 bytes per element (bf16 is held as its bit pattern).
  AlignedBuffer<uint16_t> q_, k_, v_, out_;
};

// What a backward call needs beyond the forward's operands: lse, a fixed pseudo-random dout
// and the gradients, in the forward operands' dtype (lse f32).
class BackwardOperands {
 public:
  explicit BackwardOperands(const Operands& fwd);

  MutableTensorView lse();
  TensorView dout() const;
  AttentionGradients grads();

 private:
  Shape shape_;
  DType dtype_;
  AlignedBuffer<uint16_t> lse_, dout_, dq_, dk_, dv_;
};

}  // namespace xattn::bench
