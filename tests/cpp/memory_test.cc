// Peak memory of a long cross-attention: Lq = Lk = 32768, one head, D = 64. The fused kernel
// keeps O((Lq + Lk)·D) memory, so the process stays far below the 4 GiB an Lq×Lk f32 score
// matrix would take. Its own process, so the peak RSS is this call's alone.

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "peak_rss.h"
#include "xattn/xattn.h"

namespace xattn {
namespace {

using testing::peak_rss_mb;

TEST(Memory, LongCrossAttentionStaysUnder300MB) {
  const int64_t L = 32768, D = 64;
  std::vector<float> q(L * D), k(L * D), v(L * D), out(L * D), lse(L);
  std::mt19937 rng(1);
  std::normal_distribution<float> n;
  for (auto* x : {&q, &k, &v}) for (float& e : *x) e = n(rng);
  attention(view(q.data(), {1, 1, L, D}), view(k.data(), {1, 1, L, D}),
            view(v.data(), {1, 1, L, D}), {}, {view(out.data(), {1, 1, L, D}), view(lse.data(), {1, 1, L})});
  const double peak = peak_rss_mb();
  std::printf("peak RSS: %.1f MB\n", peak);
  EXPECT_LT(peak, 300.0);
  // A spot check that the result is a real attention output: a convex combination of V rows.
  for (int64_t i = 0; i < L; i += 4099)
    for (int64_t e = 0; e < D; ++e) ASSERT_LE(std::abs(out[i * D + e]), 6.0f);
}

}  // namespace
}  // namespace xattn
