#pragma once
// The forward's tile kernels timed alone: one thread, operands in cache, one tile of the rows-in-
// lanes layout (the target's register block of query rows x a key tile). Their rates bound what
// the kernel's stages reach in place (`xattn bench --profile`), so the two together tell the
// micro-kernels' own limits from what the tiles lose around them (caches, packing, scheduling).

#include <cstdint>

namespace xattn::bench {

struct TileKernelTimes {
  int64_t rows = 0, keys = 0, head_dim = 0, value_dim = 0;
  // Seconds per call, the fastest of several rounds: Q·Kᵀ (qk_tile), the online softmax step,
  // P·V (pv_tile), and the three in a row as the forward runs them.
  double scores = 0, softmax = 0, weighted_sum = 0, tile = 0;
  int64_t lanes = 0;  // floats per vector: the softmax works on vectors of that many scores

  double score_flops() const { return 2.0 * rows * keys * head_dim; }
  double weighted_sum_flops() const { return 2.0 * rows * keys * value_dim; }
  double score_vectors() const { return static_cast<double>(rows * keys / lanes); }
};

// Times the tile kernels of the SIMD target the kernels use, for these head and value dimensions,
// in about min_seconds in all.
TileKernelTimes time_tile_kernels(int64_t head_dim, int64_t value_dim, double min_seconds);

}  // namespace xattn::bench
