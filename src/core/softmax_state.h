#pragma once
// The online-softmax state of one query row over some set of keys:
//   m   = max_j s_j                       (-inf while no key has been seen)
//   l   = Σ_j exp(s_j - m)
//   acc = Σ_j exp(s_j - m) · v_j          (length Dv, kept by the caller)
// Tiles, key splits across threads and results from elsewhere all combine through merge().
// A result (out, lse) is the state (m = lse, l = 1, acc = out).

#include <cmath>
#include <cstdint>
#include <limits>

namespace xattn::core {

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct SoftmaxState {
  float m = kNegInf;
  float l = 0.0f;
};

// Folds state b (with accumulator acc_b) into a (acc_a), in place:
//   m = max(m_a, m_b); acc_a = e^(m_a-m)·acc_a + e^(m_b-m)·acc_b; l likewise.
inline void merge_into(SoftmaxState& a, float* acc_a, const SoftmaxState& b, const float* acc_b,
                       int64_t dv) {
  if (b.m == kNegInf) return;  // b saw nothing (or only -inf scores): it adds nothing
  if (a.m == kNegInf) {
    a = b;
    for (int64_t d = 0; d < dv; ++d) acc_a[d] = acc_b[d];
    return;
  }
  const float m = std::fmax(a.m, b.m);
  const float wa = std::exp(a.m - m), wb = std::exp(b.m - m);
  for (int64_t d = 0; d < dv; ++d) acc_a[d] = wa * acc_a[d] + wb * acc_b[d];
  a.l = wa * a.l + wb * b.l;
  a.m = m;
}

// lse = m + log l, or -inf for a row that saw no key.
inline float row_lse(const SoftmaxState& s) { return s.l == 0.0f ? kNegInf : s.m + std::log(s.l); }

// out = acc · (1/l) and lse = m + log l; a row that saw no key gives out = 0 and lse = -inf.
// NaN in the state (from a visible NaN input) propagates.
inline float finalize_row(const SoftmaxState& s, const float* acc, float* out, int64_t dv) {
  const float inv = 1.0f / s.l;
  for (int64_t d = 0; d < dv; ++d) out[d] = s.l == 0.0f ? 0.0f : acc[d] * inv;
  return row_lse(s);
}

}  // namespace xattn::core
