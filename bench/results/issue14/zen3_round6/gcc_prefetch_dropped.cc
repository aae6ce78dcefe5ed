// GCC 12 deletes calls to a function whose only effect is a prefetch. Built from the repository
// root:
//   g++ -std=c++20 -O3 -Iinclude -Isrc -S -o - bench/results/issue14/zen3_round6/gcc_prefetch_dropped.cc \
//     | grep -A3 '^_Z6caller'
// shows `caller` compiled to a bare `ret` (prefetch_rows itself is still emitted, with its
// prefetches, but never called); with -DFORCE_INLINE, `caller` holds the prefetch loop.
#include <cstdint>

#include "core/convert.h"
#include "core/partition.h"
#include "core/problem.h"

using namespace xattn::core;

#ifdef FORCE_INLINE
__attribute__((always_inline)) inline
#endif
void prefetch_rows(const Problem& p, const Operand& t, int64_t width, const WorkItem& w) {
  const int64_t G = p.group_size(), size = xattn::dtype_size(t.dtype);
  for (int64_t flat = w.row_begin; flat < w.row_end; ++flat) {
    const char* row = static_cast<const char*>(element_ptr(
        t.data, t.dtype, t.offset(w.seq, w.kv_head * G + flat % G, flat / G, 0)));
    for (int64_t at = 0; at < width * size; at += 64) __builtin_prefetch(row + at, 0, 3);
  }
}

void caller(const Problem& p, const WorkItem* next) {
  if (next) prefetch_rows(p, p.q, p.head_dim, *next);
}
