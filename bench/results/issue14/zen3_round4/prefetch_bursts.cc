// Does compute overlap a memory stream on this core, and how do software prefetches change it?
// Reads 256 MiB once per timing, doing `kWork` FMAs (8 independent chains) per 64-byte line,
// with no prefetch, one prefetch per line at several distances, or bursts of 8 or 64 lines.
// The measurement behind "bursts of prefetches serialise compute and memory" in summary.md:
//
//   g++ -O2 -march=native -o /tmp/prefetch_bursts prefetch_bursts.cc && /tmp/prefetch_bursts
//
// (x86 with AVX2 and FMA; best of 3 timings per row.)
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

enum Kind { kNone, kT0, kT1, kNta, kBurst8, kBurst64 };

template <Kind kKind, int kWork>
__attribute__((noinline)) float stream(const float* a, size_t n, size_t distance_lines) {
  __m256 acc[8];
  for (auto& x : acc) x = _mm256_setzero_ps();
  const __m256 q = _mm256_set1_ps(0.5f);
  for (size_t i = 0; i < n; i += 16) {  // one 64-byte line a step
    const char* ahead = reinterpret_cast<const char*>(a + i) + distance_lines * 64;
    if (kKind == kT0) _mm_prefetch(ahead, _MM_HINT_T0);
    if (kKind == kT1) _mm_prefetch(ahead, _MM_HINT_T1);
    if (kKind == kNta) _mm_prefetch(ahead, _MM_HINT_NTA);
    if (kKind == kBurst8 && i % (8 * 16) == 0)
      for (int l = 0; l < 8; ++l) _mm_prefetch(ahead + l * 64, _MM_HINT_T0);
    if (kKind == kBurst64 && i % (64 * 16) == 0)
      for (int l = 0; l < 64; ++l) _mm_prefetch(ahead + l * 64, _MM_HINT_T0);
    const __m256 x0 = _mm256_load_ps(a + i), x1 = _mm256_load_ps(a + i + 8);
#pragma GCC unroll 64
    for (int w = 0; w < kWork; ++w) acc[w % 8] = _mm256_fmadd_ps(w & 1 ? x1 : x0, q, acc[w % 8]);
  }
  __m256 s = acc[0];
  for (int k = 1; k < 8; ++k) s = _mm256_add_ps(s, acc[k]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];
}

int main() {
  const size_t n = (size_t{256} << 20) / sizeof(float);
  float* a = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  for (size_t i = 0; i < n; ++i) a[i] = 1e-6f * static_cast<float>(i % 11);
  float sink = 0;
  auto row = [&](const char* name, int work, auto run) {
    double best = 1e9;
    for (int t = 0; t < 3; ++t) {
      const auto t0 = std::chrono::steady_clock::now();
      sink += run();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("%-16s %2d FMAs/line: %6.2f GB/s %6.1f GFLOP/s\n", name, work,
                n * sizeof(float) / best / 1e9, static_cast<double>(n) * work / best / 1e9);
  };
  auto rows = [&]<int kWork>() {
    row("none", kWork, [&] { return stream<kNone, kWork>(a, n, 0); });
    row("T0 at 64 lines", kWork, [&] { return stream<kT0, kWork>(a, n, 64); });
    row("T0 at 1024", kWork, [&] { return stream<kT0, kWork>(a, n, 1024); });
    row("T1 at 256", kWork, [&] { return stream<kT1, kWork>(a, n, 256); });
    row("NTA at 256", kWork, [&] { return stream<kNta, kWork>(a, n, 256); });
    row("8-line bursts", kWork, [&] { return stream<kBurst8, kWork>(a, n, 256); });
    row("64-line bursts", kWork, [&] { return stream<kBurst64, kWork>(a, n, 256); });
  };
  rows.template operator()<8>();
  rows.template operator()<16>();
  rows.template operator()<24>();
  rows.template operator()<32>();
  std::printf("(checksum %g)\n", sink);
  std::free(a);
}
