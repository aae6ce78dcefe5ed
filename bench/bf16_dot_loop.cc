#include "bench/bf16_dot_loop.h"

#include <immintrin.h>

namespace xattn::bench {
namespace {

// VDPBF16PS has a latency of about 5-6 cycles at one or two per cycle: 16 chains cover that, and
// AVX-512 has 32 registers to hold them.
constexpr int kChains = 16;
constexpr double kFlopsPerInstruction = 16 * 2 * 2;

// Compiled for AVX-512 BF16 whatever the rest of the build targets; reached only after the
// run-time check in have_bf16_dot().
__attribute__((target("avx512f,avx512bf16"))) LoopResult chains(int64_t iters) {
  // Products of 1 · 2^-20 keep the sums far from overflow and from denormals.
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1.0f), _mm512_set1_ps(1.0f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0x1p-20f), _mm512_set1_ps(0x1p-20f));
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  for (int64_t i = 0; i < iters; ++i) {
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
  }
  __m512 total = acc[0];
  for (int c = 1; c < kChains; ++c) total = _mm512_add_ps(total, acc[c]);
  // Summed through memory: GCC 12's _mm512_reduce_add_ps trips -Wuninitialized inside its header.
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, total);
  float checksum = 0;
  for (float x : lanes) checksum += x;
  return {kFlopsPerInstruction * kChains * static_cast<double>(iters), checksum};
}

}  // namespace

bool have_bf16_dot() { return __builtin_cpu_supports("avx512bf16"); }

LoopResult bf16_dot_chains(int64_t iters) { return chains(iters); }

}  // namespace xattn::bench
