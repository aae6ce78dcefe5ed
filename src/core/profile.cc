#include "core/profile.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace xattn::core::profile {
namespace {

// One cache line per stage, so that threads adding to different stages do not contend.
struct alignas(64) Sum {
  std::atomic<uint64_t> cycles{0};
};
Sum sums[kStages];

}  // namespace

std::atomic<bool> enabled{false};

const char* stage_name(Stage s) {
  static const char* const names[kStages] = {
      "pack queries", "scores", "softmax", "weighted sum", "finish",
      "pack rows", "scores", "gradients", "dK dV", "dQ", "stores"};
  return names[s];
}

uint64_t now() {
#if defined(__x86_64__) || defined(__i386__)
  return __rdtsc();
#else
  return std::chrono::steady_clock::now().time_since_epoch().count();
#endif
}

void add(Stage s, uint64_t cycles) { sums[s].cycles.fetch_add(cycles, std::memory_order_relaxed); }

void start() {
  for (Sum& s : sums) s.cycles.store(0);
  enabled.store(true);
}

std::array<uint64_t, kStages> stop() {
  enabled.store(false);
  std::array<uint64_t, kStages> out{};
  for (int i = 0; i < kStages; ++i) out[i] = sums[i].cycles.load();
  return out;
}

}  // namespace xattn::core::profile
