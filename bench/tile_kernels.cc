// Compiled once per SIMD target, like the kernels (src/kernels/forward.cc), whose tile kernels it
// includes and times alone.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bench/tile_kernels.cc"
#include "bench/tile_kernels.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>

#include "bench/aligned_buffer.h"
#include "bench/timing.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/score_tile-inl.h"
#include "kernels/tile_kernels-inl.h"
#include "kernels/work_item-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::bench::HWY_NAMESPACE {
namespace kn = xattn::kernels::HWY_NAMESPACE;

// Seconds per call of each of fns, the fastest of many rounds of `calls` calls (a round about a
// millisecond); the functions take turns round by round until min_seconds have passed, so that a
// disturbance on a shared host meets them all alike and each keeps its undisturbed rounds.
template <size_t kCount, class Fn>
std::array<double, kCount> fastest_calls(double min_seconds, const std::array<Fn, kCount>& fns) {
  std::array<int64_t, kCount> calls;
  std::array<double, kCount> best;
  for (size_t i = 0; i < kCount; ++i) {
    const double t0 = now_seconds();
    fns[i]();
    const double once = std::max(now_seconds() - t0, 1e-8);
    calls[i] = static_cast<int64_t>(std::clamp(1e-3 / once, 1.0, 1e6));
    best[i] = std::numeric_limits<double>::infinity();
  }
  for (const double end = now_seconds() + min_seconds; now_seconds() < end;) {
    for (size_t i = 0; i < kCount; ++i) {
      const double start = now_seconds();
      for (int64_t c = 0; c < calls[i]; ++c) fns[i]();
      best[i] = std::min(best[i], (now_seconds() - start) / static_cast<double>(calls[i]));
    }
  }
  return best;
}

TileKernelTimes TimeTileKernels(int64_t head_dim, int64_t value_dim, double min_seconds) {
  constexpr int kRowVecs = kn::kTileRowVecs;
  const int64_t lanes = kn::lanes();
  const int64_t br = kRowVecs * lanes, nk = kn::kKeysPerTile, D = head_dim, Dv = value_dim;
  AlignedBuffer<float> qt(D * br), st(nk * br), acc(Dv * br), k(nk * D), v(nk * Dv), state(3 * br);
  // Scores of a few units and weights in (0, 1]: no overflow, no subnormals, however many calls.
  for (int64_t i = 0; i < D * br; ++i) qt[i] = 0.05f * static_cast<float>(i % 7);
  for (int64_t i = 0; i < nk * D; ++i) k[i] = 0.1f * static_cast<float>(i % 5);
  for (int64_t i = 0; i < nk * Dv; ++i) v[i] = 0.01f * static_cast<float>(i % 3);
  std::fill(acc.data(), acc.data() + Dv * br, 0.0f);
  float *m = state.data(), *l = m + br, *alpha = l + br;
  std::fill(m, m + br, -INFINITY);
  std::fill(l, l + br, 0.0f);
  const auto scores = [&] { kn::qk_tile<kRowVecs>(qt.data(), br, k.data(), D, nk, D, st.data()); };
  const auto softmax = [&] { kn::online_softmax_tile<kRowVecs>(st.data(), br, nk, m, l, alpha); };
  const auto weighted_sum = [&] {
    kn::pv_tile<kRowVecs, false>(acc.data(), br, alpha, st.data(), v.data(), Dv, nk, Dv);
  };
  TileKernelTimes t;
  t.rows = br, t.keys = nk, t.head_dim = D, t.value_dim = Dv, t.lanes = lanes;
  scores();
  // The softmax rewrites its scores as weights, and then works on those: the same instructions.
  const std::array<std::function<void()>, 4> kernels = {
      scores, softmax, weighted_sum, [&] { scores(), softmax(), weighted_sum(); }};
  const std::array<double, 4> best = fastest_calls(min_seconds, kernels);
  t.scores = best[0], t.softmax = best[1], t.weighted_sum = best[2], t.tile = best[3];
  return t;
}

}  // namespace xattn::bench::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace xattn::bench {

HWY_EXPORT(TimeTileKernels);

TileKernelTimes time_tile_kernels(int64_t head_dim, int64_t value_dim, double min_seconds) {
  return HWY_DYNAMIC_DISPATCH(TimeTileKernels)(head_dim, value_dim, min_seconds);
}

}  // namespace xattn::bench
#endif
