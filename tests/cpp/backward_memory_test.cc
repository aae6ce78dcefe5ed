// Peak memory of a long backward: Lq = Lk = 12288, one head, D = 64. The backward recomputes
// the probabilities block by block, so it never holds anything of size Lq·Lk (an f32 score
// matrix alone would be 604 MB). Its own process, so the peak RSS is these calls' alone.

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "peak_rss.h"
#include "xattn/xattn.h"

namespace xattn {
namespace {

using testing::peak_rss_mb;

TEST(Memory, LongBackwardStaysUnder100MB) {
  const int64_t L = 12288, D = 64;
  std::vector<float> q(L * D), k(L * D), v(L * D), out(L * D), lse(L), dout(L * D);
  std::vector<float> dq(L * D), dk(L * D), dv(L * D);
  std::mt19937 rng(1);
  std::normal_distribution<float> n;
  for (auto* x : {&q, &k, &v, &dout}) for (float& e : *x) e = n(rng);
  const auto t = [&](std::vector<float>& x) { return view(x.data(), {1, 1, L, D}); };
  AttentionParams params;
  params.causal = true;
  attention(t(q), t(k), t(v), params, {t(out), view(lse.data(), {1, 1, L})});
  attention_backward(t(q), t(k), t(v), t(out), view(lse.data(), {1, 1, L}), t(dout), params,
                     {t(dq), t(dk), t(dv)});
  const double peak = peak_rss_mb();
  std::printf("peak RSS: %.1f MB\n", peak);
  // The inputs and outputs are 28 MB; the backward adds its packed query rows (Qᵀ, Q, dOᵀ, dO
  // and dQᵀ: 16 MB here), linear in Lq. Release measures 45 MB.
#ifndef __SANITIZE_ADDRESS__
  // (ASan keeps freed blocks resident in its quarantine, so there the peak counts memory the
  // library has already given back; the Release run measures.)
  EXPECT_LT(peak, 100.0);
#endif
  // A spot check that the gradients are real numbers, and that the first query, which sees
  // only the first key, gets dq = scale·p·(dp - delta)·k = 0 exactly in exact arithmetic.
  for (int64_t i = 0; i < L * D; i += 4099) {
    ASSERT_TRUE(std::isfinite(dq[i]) && std::isfinite(dk[i]) && std::isfinite(dv[i]));
  }
  for (int64_t e = 0; e < D; ++e) ASSERT_LE(std::abs(dq[e]), 1e-4f);
}

}  // namespace
}  // namespace xattn
