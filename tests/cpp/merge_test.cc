// Attention over keys split in two parts and merged equals attention over all keys.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "oracle_util.h"

namespace xattn::testing {
namespace {

TEST(Merge, TwoKeyPartsMergeIntoTheWhole) {
  const int64_t B = 2, H = 3, Lq = 7, Lk = 90, D = 16, split = 37;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> n;
  std::vector<float> q(B * H * Lq * D), k(B * H * Lk * D), v(B * H * Lk * D);
  for (auto* x : {&q, &k, &v}) for (float& e : *x) e = n(rng);
  // The two key parts as separate tensors: views of the same memory with fewer keys.
  const int64_t ks = H * Lk * D;
  auto kv_part = [&](std::vector<float>& t, int64_t first, int64_t count) {
    return TensorView{t.data() + first * D, DType::kF32,
                      Layout::strided({B, H, count, D}, {ks, Lk * D, D, 1})};
  };
  std::vector<float> oa(B * H * Lq * D), ob(oa.size()), la(B * H * Lq), lb(la.size()),
      whole(oa.size()), lwhole(la.size()), merged(oa.size()), lmerged(la.size());
  AttentionParams params;
  attention(view(q.data(), {B, H, Lq, D}), kv_part(k, 0, split), kv_part(v, 0, split), params,
            {view(oa.data(), {B, H, Lq, D}), view(la.data(), {B, H, Lq})});
  attention(view(q.data(), {B, H, Lq, D}), kv_part(k, split, Lk - split),
            kv_part(v, split, Lk - split), params,
            {view(ob.data(), {B, H, Lq, D}), view(lb.data(), {B, H, Lq})});
  attention(view(q.data(), {B, H, Lq, D}), view(k.data(), {B, H, Lk, D}),
            view(v.data(), {B, H, Lk, D}), params,
            {view(whole.data(), {B, H, Lq, D}), view(lwhole.data(), {B, H, Lq})});
  merge(view(oa.data(), {B, H, Lq, D}), view(la.data(), {B, H, Lq}), view(ob.data(), {B, H, Lq, D}),
        view(lb.data(), {B, H, Lq}), view(merged.data(), {B, H, Lq, D}),
        view(lmerged.data(), {B, H, Lq}));
  for (size_t i = 0; i < whole.size(); ++i) EXPECT_NEAR(merged[i], whole[i], 2e-6);
  for (size_t i = 0; i < lwhole.size(); ++i) EXPECT_NEAR(lmerged[i], lwhole[i], 2e-6);
}

// AttentionOutputs::accumulate: the second part merged into the first's (out, lse) as it is
// stored equals the whole: with and without a causal mask, with q_lens (rows past q_len keep
// their prior result), and with one row tile, whose keys two threads split and merge first.
TEST(Merge, AccumulateIntoAnEarlierResult) {
  const int64_t Lq = 5, Lk = 300, D = 8, split = 110;
  for (const int64_t B : {2, 1})
    for (const bool causal : {false, true}) {
      const int64_t H = B;  // B = H = 1: one row tile for two threads
      std::mt19937_64 rng(5);
      std::normal_distribution<float> n;
      std::vector<float> q(B * H * Lq * D), k(B * H * Lk * D), v(B * H * Lk * D);
      for (auto* x : {&q, &k, &v}) for (float& e : *x) e = n(rng);
      auto part = [&](std::vector<float>& t, int64_t first, int64_t count) {
        return TensorView{t.data() + first * D, DType::kF32,
                          Layout::strided({B, H, count, D}, {H * Lk * D, Lk * D, D, 1})};
      };
      const std::vector<int64_t> q_lens = {5, 3};
      AttentionParams params;
      params.causal = causal;
      params.align = CausalAlign::kBottomRight;  // row i sees keys up to i + Lk - Lq
      if (B == 2) params.q_lens = q_lens;
      params.num_threads = 2;
      std::vector<float> whole(B * H * Lq * D), lwhole(B * H * Lq), out(whole.size()),
          lse(lwhole.size());
      attention(view(q.data(), {B, H, Lq, D}), view(k.data(), {B, H, Lk, D}),
                view(v.data(), {B, H, Lk, D}), params,
                {view(whole.data(), {B, H, Lq, D}), view(lwhole.data(), {B, H, Lq})});
      AttentionParams first = params;
      first.causal = false;  // the first part lies wholly before every row's diagonal
      attention(view(q.data(), {B, H, Lq, D}), part(k, 0, split), part(v, 0, split), first,
                {view(out.data(), {B, H, Lq, D}), view(lse.data(), {B, H, Lq})});
      AttentionOutputs rest{view(out.data(), {B, H, Lq, D}), view(lse.data(), {B, H, Lq})};
      rest.accumulate = true;
      attention(view(q.data(), {B, H, Lq, D}), part(k, split, Lk - split),
                part(v, split, Lk - split), params, rest);
      for (size_t i = 0; i < whole.size(); ++i) EXPECT_NEAR(out[i], whole[i], 2e-6) << i;
      for (size_t i = 0; i < lwhole.size(); ++i) {
        if (std::isinf(lwhole[i])) EXPECT_EQ(lse[i], lwhole[i]) << i;  // rows past q_len
        else EXPECT_NEAR(lse[i], lwhole[i], 2e-5) << i;
      }
    }
}

TEST(Merge, AccumulateNeedsLseAndNoWeights) {
  std::vector<float> q(8, 0.5f), out(8, 7.0f), lse(2, 1.0f), w(2 * 3, 7.0f), kv(12, 1.0f);
  AttentionOutputs outputs{view(out.data(), {1, 1, 2, 4})};
  outputs.accumulate = true;
  const auto call = [&] {
    attention(view(q.data(), {1, 1, 2, 4}), view(kv.data(), {1, 1, 3, 4}),
              view(kv.data(), {1, 1, 3, 4}), {}, outputs);
  };
  EXPECT_THROW(
      try { call(); } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "lse: is required with accumulate (the log-sum-exp of the result "
                               "that out holds)");
        throw;
      },
      Error);
  outputs.lse = view(lse.data(), {1, 1, 2});
  outputs.weights = view(w.data(), {1, 1, 2, 3});
  EXPECT_THROW(call(), Error);
  EXPECT_EQ(out, std::vector<float>(8, 7.0f));  // untouched
  EXPECT_EQ(lse, std::vector<float>(2, 1.0f));
}

TEST(Merge, EmptyPartsAndAliasing) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> a = {1, 2, 3, 4}, la = {-inf, 0.5f}, b = {5, 6, 7, 8}, lb = {0.25f, -inf};
  // Row 0: only b saw keys; row 1: only a. Output aliases a.
  merge(view(a.data(), {2, 2}), view(la.data(), {2}), view(b.data(), {2, 2}), view(lb.data(), {2}),
        view(a.data(), {2, 2}), view(la.data(), {2}));
  EXPECT_EQ(a, (std::vector<float>{5, 6, 3, 4}));
  EXPECT_FLOAT_EQ(la[0], 0.25f);
  EXPECT_FLOAT_EQ(la[1], 0.5f);
  std::vector<float> c = {1, 1}, lc = {-inf}, d = {2, 2}, ld = {-inf}, o(2, 9.0f), lo = {9.0f};
  merge(view(c.data(), {1, 2}), view(lc.data(), {1}), view(d.data(), {1, 2}), view(ld.data(), {1}),
        view(o.data(), {1, 2}), view(lo.data(), {1}));
  EXPECT_EQ(o, (std::vector<float>{0, 0}));
  EXPECT_EQ(lo[0], -inf);
}

}  // namespace
}  // namespace xattn::testing
