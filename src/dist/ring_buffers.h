#pragma once
// The memory a ring step works on: blocks packed contiguously so that they travel as one
// message, and the f32 sums that become the caller's outputs. No MPI here.

#include <cstdint>

#include "xattn/tensor.h"

namespace xattn::dist {

// A row-major [d0, d1, d2, d3] view of `data`.
MutableTensorView dense_view(void* data, DType dtype, int64_t d0, int64_t d1, int64_t d2,
                             int64_t d3);

// Copies a rank-4 view (any strides) into `dst`, row-major, in its own dtype.
void pack(const TensorView& src, void* dst);

// Stores a row-major f32 [d0, d1, d2, d3] array into a rank-4 view of that shape (any strides),
// rounding to its dtype (f32, bf16 or f16).
void store(const float* src, const MutableTensorView& dst);

// acc[b, h, first + i, :] += part[b, h, i, :] for a row-major acc [d0, d1, rows, width] and
// part [d0, d1, count, width]: one f32 add per element, so the order of calls fixes the bits.
void add_rows(float* acc, int64_t d0, int64_t d1, int64_t rows, int64_t width, int64_t first,
              int64_t count, const float* part);

}  // namespace xattn::dist
