// Built from the repository root on an AVX2 machine (static dispatch):
//   c++ -DHWY_SHARED_DEFINE -march=znver3 -Isrc -Iinclude -I. -O3 -DNDEBUG -std=c++20 \
//     bench/results/issue14/zen3_round6/ring.cc -lhwy -o /tmp/ring && /tmp/ring 64
// The forward's tile (Q·Kᵀ, softmax, P·V) with K and V taken from a ring of `ring` key tiles:
// 1 tile (64 KB at D = 64: the harness of bench/tile_kernels.cc), 4 (256 KB: an L2 key chunk),
// 64 (4 MB: L3), 512 (32 MB+: memory).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "hwy/highway.h"
#include "hwy/aligned_allocator.h"
#include "kernels/score_tile-inl.h"
#include "kernels/tile_kernels-inl.h"
#include "kernels/work_item-inl.h"
namespace kn = xattn::kernels::HWY_NAMESPACE;
static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
int main(int argc, char** argv) {
  const long D = argc > 1 ? atol(argv[1]) : 64;
  constexpr int kRowVecs = kn::kTileRowVecs;
  const long br = kRowVecs * kn::lanes(), nk = kn::kKeysPerTile;
  const std::vector<long> rings = {1, 2, 4, 8, 64, 512};
  const long max_ring = 512;
  auto qt = hwy::AllocateAligned<float>(D * br), st = hwy::AllocateAligned<float>(nk * br);
  auto acc = hwy::AllocateAligned<float>(D * br), k = hwy::AllocateAligned<float>(max_ring * nk * D);
  auto v = hwy::AllocateAligned<float>(max_ring * nk * D), state = hwy::AllocateAligned<float>(3 * br);
  for (long i = 0; i < D * br; ++i) qt[i] = 0.05f * (i % 7);
  for (long i = 0; i < max_ring * nk * D; ++i) k[i] = 0.1f * (i % 5), v[i] = 0.01f * (i % 3);
  float *m = state.get(), *l = m + br, *alpha = l + br;
  std::vector<double> best(rings.size(), 1e9);
  const double flops = 4.0 * br * nk * D;
  for (int round = 0; round < 40; ++round)
    for (size_t r = 0; r < rings.size(); ++r) {
      const long ring = rings[r];
      std::fill(acc.get(), acc.get() + D * br, 0.0f);
      std::fill(m, m + br, -INFINITY), std::fill(l, l + br, 0.0f);
      const long calls = 2000;
      const double t0 = now();
      for (long c = 0; c < calls; ++c) {
        const float* kt = k.get() + (c % ring) * nk * D;
        const float* vt = v.get() + (c % ring) * nk * D;
        kn::qk_tile<kRowVecs>(qt.get(), br, kt, D, nk, D, st.get());
        kn::online_softmax_tile<kRowVecs>(st.get(), br, nk, m, l, alpha);
        kn::pv_tile<kRowVecs, false>(acc.get(), br, alpha, st.get(), vt, D, nk, D);
      }
      best[r] = std::min(best[r], (now() - t0) / calls);
    }
  for (size_t r = 0; r < rings.size(); ++r)
    printf("D %ld ring %4ld tiles (%6ld KB of K+V): the tile %.1f GFLOP/s\n", D, rings[r],
           rings[r] * nk * D * 8 / 1024, flops / best[r] * 1e-9);
}
