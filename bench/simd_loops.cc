// Compiled once per SIMD target; HWY_DYNAMIC_DISPATCH picks the best one the CPU runs, as the
// kernels do (src/kernels/forward.cc), so the peak is measured at the width xattn itself uses.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bench/simd_loops.cc"
#include "bench/simd_loops.h"

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::bench::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// 12 chains: FMA latency (4 cycles on current x86) × 2 FMA ports needs 8; 12 leaves slack and,
// with the two constants, still fits the 16 registers of AVX2 (no spills in the loop).
constexpr int kChains = 12;

LoopResult FmaChains(int64_t iters) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  // acc = acc·a + b converges to b / (1 - a) ≈ 1: values stay normal (no denormal slow path)
  // and finite however long the loop runs.
  const V a = hn::Set(d, 0.999f), b = hn::Set(d, 0.001f);
  V acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = hn::Set(d, static_cast<float>(c));
  for (int64_t i = 0; i < iters; ++i) {
    for (int c = 0; c < kChains; ++c) acc[c] = hn::MulAdd(acc[c], a, b);
  }
  V total = acc[0];
  for (int c = 1; c < kChains; ++c) total = hn::Add(total, acc[c]);
  const double flops = 2.0 * static_cast<double>(hn::Lanes(d)) * kChains * static_cast<double>(iters);
  return {flops, hn::GetLane(hn::SumOfLanes(d, total))};
}

float SumFloats(const float* p, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  // Four accumulators hide the add latency; memory, not the adds, is the bound.
  auto s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    s0 = hn::Add(s0, hn::LoadU(d, p + i));
    s1 = hn::Add(s1, hn::LoadU(d, p + i + N));
    s2 = hn::Add(s2, hn::LoadU(d, p + i + 2 * N));
    s3 = hn::Add(s3, hn::LoadU(d, p + i + 3 * N));
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
  for (; i < n; ++i) sum += p[i];
  return sum;
}

}  // namespace xattn::bench::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace xattn::bench {

HWY_EXPORT(FmaChains);
HWY_EXPORT(SumFloats);

LoopResult fma_chains(int64_t iters) { return HWY_DYNAMIC_DISPATCH(FmaChains)(iters); }
float sum_floats(const float* p, size_t n) { return HWY_DYNAMIC_DISPATCH(SumFloats)(p, n); }

}  // namespace xattn::bench
#endif
