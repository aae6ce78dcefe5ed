#include "bench/machine_limits.h"

#include "bench/bandwidth.h"
#include "bench/bf16_dot_loop.h"
#include "bench/simd_loops.h"
#include "bench/timing.h"

namespace xattn::bench {
namespace {

// Long enough that the parallel region's start and end are noise, short enough for a test run.
constexpr double kMinPeakSeconds = 0.02;
constexpr int kPeakReps = 3;

volatile float g_sink;  // keeps every chain's result alive

// GFLOP/s of `loop` run by every thread at once. The iteration count is scaled from a short
// single-thread trial to take about kMinPeakSeconds per round, so the figure does not depend on
// guessing the clock speed.
template <class Loop>
double peak_gflops(int threads, const Loop& loop) {
  int64_t iters = int64_t{1} << 12;
  for (;;) {
    const double t0 = now_seconds();
    g_sink = loop(iters).checksum;
    const double t = now_seconds() - t0;
    if (t >= kMinPeakSeconds / 8) {
      iters = static_cast<int64_t>(static_cast<double>(iters) * kMinPeakSeconds / t) + 1;
      break;
    }
    iters *= 2;
  }
  double flops = 0;
  const double s = best_parallel_seconds(
      threads, kPeakReps,
      [&](int, int) {
        const LoopResult r = loop(iters);
        g_sink = r.checksum;
        return r.flops;
      },
      &flops);
  return flops / s * 1e-9;
}

}  // namespace

std::vector<MachineLimits> measure_machine_limits(std::span<const int> thread_counts) {
  BandwidthProbe memory;
  std::vector<MachineLimits> limits;
  for (int threads : thread_counts) {
    MachineLimits m;
    m.threads = threads;
    m.fma_gflops = peak_gflops(threads, fma_chains);
    if (have_bf16_dot()) m.bf16_gflops = peak_gflops(threads, bf16_dot_chains);
    m.copy_gbps = memory.copy_gbps(threads);
    m.read_gbps = memory.read_gbps(threads);
    limits.push_back(m);
  }
  return limits;
}

}  // namespace xattn::bench
