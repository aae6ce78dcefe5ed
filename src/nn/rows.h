#pragma once
// Views of layer inputs as the row matrices BLAS takes.

#include <string_view>
#include <vector>

#include "xattn/nn/linear.h"
#include "xattn/tensor.h"

namespace xattn::nn {

// x [..., width] (rank 1-4, any float dtype and strides) as rows of `width`: the caller's memory
// when it already is such a matrix (f32, unit last stride, leading dims of one stride), else a
// converted copy in `scratch`. Throws xattn::Error naming `arg` for a bool or absent x.
RowsView as_rows(const TensorView& x, std::string_view arg, std::vector<float>& scratch);

// The element count of x's leading dims (all but the last).
int64_t leading_count(const TensorView& x);

}  // namespace xattn::nn
