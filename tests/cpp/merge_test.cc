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
