#pragma once
// What this machine can do at most, measured in the same run as the attention timings, so each
// attention figure is reported as a fraction of a limit measured under the same conditions
// (frequency, other tenants, thread placement).

#include <optional>
#include <span>
#include <vector>

namespace xattn::bench {

struct MachineLimits {
  int threads = 1;
  double fma_gflops = 0;              // f32 FMA peak on the widest vectors, all threads
  std::optional<double> bf16_gflops;  // AVX-512 BF16 dot peak; absent where the CPU has none
  double copy_gbps = 0;               // memory copy: (bytes read + bytes written) / s
  double read_gbps = 0;               // memory read only
};

// One entry per thread count, in order. Takes about half a second per count.
std::vector<MachineLimits> measure_machine_limits(std::span<const int> thread_counts);

}  // namespace xattn::bench
