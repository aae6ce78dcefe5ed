#pragma once
// Parts of a caller's rank-4 views without copying: rows, batches, and a mask's block. No MPI here.

#include <cstdint>
#include <type_traits>

#include "xattn/tensor.h"

namespace xattn::dist {

// [first, first + count) of dim `dim` of a view.
template <class View>
View slice(View t, int dim, int64_t first, int64_t count) {
  using Byte = std::conditional_t<std::is_same_v<View, TensorView>, const char, char>;
  t.data = static_cast<Byte*>(t.data) + first * t.layout.strides[dim] * dtype_size(t.dtype);
  t.layout.shape[dim] = count;
  return t;
}

// Rows [first, first + count) of dim 2 of a rank-4 view.
template <class View>
View rows_of(View t, int64_t first, int64_t count) {
  return slice(t, 2, first, count);
}

// Batches [first, first + count) of dim 0 of a view (a rank-0 view stays as it is).
template <class View>
View batches(View t, int64_t first, int64_t count) {
  return t.layout.rank == 0 ? t : slice(t, 0, first, count);
}

// The part of a mask that broadcasts to [B, Hq, Lq, Lk] (right-aligned, rank 0 to 4) over
// batches [b0, b0 + nb), query rows [r0, r0 + nr) and keys [c0, c0 + nc): dims of size 1
// broadcast as they are, the others are cut. An absent mask stays absent.
inline TensorView mask_block(TensorView m, int64_t b0, int64_t nb, int64_t r0, int64_t nr,
                             int64_t c0, int64_t nc) {
  if (!m.present()) return m;
  const int first = 4 - m.rank();  // the 4-D dim of the mask's dim 0
  const int64_t starts[4] = {b0, 0, r0, c0}, counts[4] = {nb, 0, nr, nc};
  for (int d4 : {0, 2, 3}) {
    const int d = d4 - first;
    if (d >= 0 && m.size(d) > 1) m = slice(m, d, starts[d4], counts[d4]);
  }
  return m;
}

}  // namespace xattn::dist
