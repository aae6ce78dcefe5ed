#include "bench/bandwidth.h"

#include <cstring>

#include "bench/simd_loops.h"
#include "bench/timing.h"

namespace xattn::bench {
namespace {

// Each round moves hundreds of MiB; the best of a few is stable to a few percent.
constexpr int kReps = 3;

// Thread t's share [begin, end) of n floats, in whole cache lines.
struct Chunk {
  size_t begin, end;
};
Chunk chunk(size_t n, int t, int threads) {
  constexpr size_t kLine = 16;  // floats per 64-byte line
  const size_t lines = n / kLine;
  const size_t b = lines * static_cast<size_t>(t) / static_cast<size_t>(threads) * kLine;
  const size_t e =
      t + 1 == threads ? n : lines * static_cast<size_t>(t + 1) / static_cast<size_t>(threads) * kLine;
  return {b, e};
}

volatile float g_sink;  // keeps the sums of the read probe alive

}  // namespace

BandwidthProbe::BandwidthProbe(size_t bytes) : src_(bytes / sizeof(float)), dst_(bytes / sizeof(float)) {
  // Touch every page in parallel, with non-zero data (a page of zeros could stay shared).
  const size_t n = src_.size();
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    src_[i] = static_cast<float>(i & 1023);
    dst_[i] = 0.0f;
  }
}

double BandwidthProbe::copy_gbps(int threads) {
  double bytes = 0;
  const double s = best_parallel_seconds(
      threads, kReps,
      [&](int t, int nt) {
        const Chunk c = chunk(src_.size(), t, nt);
        std::memcpy(dst_.data() + c.begin, src_.data() + c.begin, (c.end - c.begin) * sizeof(float));
        return 2.0 * static_cast<double>(c.end - c.begin) * sizeof(float);  // read + written
      },
      &bytes);
  return bytes / s * 1e-9;
}

double BandwidthProbe::read_gbps(int threads) {
  double bytes = 0;
  const double s = best_parallel_seconds(
      threads, kReps,
      [&](int t, int nt) {
        const Chunk c = chunk(src_.size(), t, nt);
        g_sink = sum_floats(src_.data() + c.begin, c.end - c.begin);
        return static_cast<double>(c.end - c.begin) * sizeof(float);
      },
      &bytes);
  return bytes / s * 1e-9;
}

}  // namespace xattn::bench
