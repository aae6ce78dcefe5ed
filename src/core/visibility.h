#pragma once
// Which keys a query row sees: the range masks (key length, causal, window) reduce to one
// contiguous key interval [lo, hi) per row. Dense masks are applied on top, per element.

#include <algorithm>
#include <cstdint>

#include "core/problem.h"

namespace xattn::core {

struct KeyRange {
  int64_t lo = 0, hi = 0;  // visible keys j with lo <= j < hi; empty when hi <= lo
  bool empty() const { return hi <= lo; }
};

// Row i of sequence s. The diagonal p is i (top-left) or i + kv_len - q_len (bottom-right),
// shifted by diagonal_offset. No overflow: validation bounds |offset| + Lq + Lk and the window
// widths by 2^61, so every sum below stays within ±2^62.
inline KeyRange visible_keys(const Problem& p, const Sequence& s, int64_t i) {
  if (i >= s.q_len) return {};
  const int64_t diag = (p.bottom_right ? i + s.kv_len - s.q_len : i) + p.diagonal_offset;
  KeyRange r{0, s.kv_len};
  if (p.causal) r.hi = std::min(r.hi, diag + 1);
  if (p.window_left >= 0) r.lo = std::max(r.lo, diag - p.window_left);
  if (p.window_right >= 0) r.hi = std::min(r.hi, diag + p.window_right + 1);
  // An empty range stays inside [0, kv_len], and lo and hi never decrease as i grows (the
  // partition relies on both).
  r.lo = std::min(r.lo, s.kv_len);
  r.hi = std::max(r.hi, r.lo);
  return r;
}

}  // namespace xattn::core
