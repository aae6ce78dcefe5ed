#pragma once
// The bf16 counterpart of fma_chains: independent chains of AVX-512 BF16 dot-product
// instructions (VDPBF16PS), the instruction a bf16 attention kernel would be bound by.

#include <cstdint>

#include "bench/simd_loops.h"

namespace xattn::bench {

// Whether this CPU executes AVX-512 BF16.
bool have_bf16_dot();

// `iters` rounds of one _mm512_dpbf16_ps on each chain: 64 FLOPs per instruction (16 f32 lanes,
// each adding 2 products). Only call when have_bf16_dot().
LoopResult bf16_dot_chains(int64_t iters);

}  // namespace xattn::bench
