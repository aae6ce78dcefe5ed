#pragma once
// The register-only and streaming loops behind the machine figures, compiled per SIMD target
// (Highway) and run on the widest vectors this CPU has.

#include <cstddef>
#include <cstdint>

namespace xattn::bench {

struct LoopResult {
  double flops = 0;    // floating-point operations done
  float checksum = 0;  // depends on every accumulator, so no FMA can be dropped as unused
};

// `iters` rounds of one FMA on each of several independent accumulator chains: enough chains to
// cover FMA latency × FMA ports, so the loop runs at the FMA throughput bound.
LoopResult fma_chains(int64_t iters);

// Sum of p[0..n) with SIMD loads (read bandwidth: nothing is written).
float sum_floats(const float* p, size_t n);

}  // namespace xattn::bench
