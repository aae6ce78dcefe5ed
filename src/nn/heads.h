#pragma once
// The layers' shared steps around a kernel call: sequences in, projections, heads as views.
// Every layer keeps its sequences batch-major, [N, L, width] rows, so that the heads are strided
// views of a projection and the kernel writes its output straight into the rows the output
// projection reads.

#include <cstdint>

#include "xattn/nn/linear.h"
#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::nn {

// x as a batch-major [N, L, width] view, without a copy: batch_first [N, L, width] as it is,
// [L, N, width] transposed, unbatched [L, width] with N = 1. Throws xattn::Error naming `name`
// unless x is a float array of rank 3 (2 when !batched) whose last dim is `width`.
TensorView batch_major(const TensorView& x, const char* name, bool batched, bool batch_first,
                       int64_t width);

// proj(x) for a batch-major [N, L, in] view: [N, L, out].
Tensor project(const Linear& proj, const TensorView& x);

// Rows [N][R][H·hd] as the kernel's [N, H, R, hd].
TensorView heads(const float* rows, int64_t N, int64_t H, int64_t R, int64_t hd);
MutableTensorView heads(float* rows, int64_t N, int64_t H, int64_t R, int64_t hd);

}  // namespace xattn::nn
