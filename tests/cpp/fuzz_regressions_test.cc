// Inputs the fuzzers (fuzz/, scripts/fuzz) found mishandled, reduced to one test each. Some only
// failed under the sanitizers (undefined behaviour that happened to give the right answer).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "xattn/xattn.h"

namespace xattn {
namespace {

// attention_fuzz: a dense backward with no query rows (Lq = 0) and a float mask with its
// gradient. The mask [B, Hq, 0, Lk] broadcasts to the forward's [B, Hq, Lq, Lk], but the
// gradient's broadcast used a target of at least 1 row (right only for packed batches) and
// refused it.
TEST(FuzzRegressions, BackwardWithoutQueryRowsTakesTheMaskGradient) {
  const int64_t B = 1, H = 1, Lq = 0, Lk = 3, D = 2;
  float none = 0;  // empty views still need data
  std::vector<float> k(B * H * Lk * D, 0.5f), v(B * H * Lk * D, 1.0f), mask(B * H * Lk, 0.25f);
  std::vector<float> dk(k.size(), 7.0f), dv(v.size(), 7.0f), dmask(mask.size(), 7.0f);
  const TensorView q = view(&none, {B, H, Lq, D}), out = view(&none, {B, H, Lq, D});
  const TensorView lse = view(&none, {B, H, Lq}), dout = view(&none, {B, H, Lq, D});
  AttentionParams params;
  params.mask = view(mask.data(), {B, H, Lq, Lk});
  AttentionGradients grads{view(&none, {B, H, Lq, D}), view(dk.data(), {B, H, Lk, D}),
                           view(dv.data(), {B, H, Lk, D}), view(dmask.data(), {B, H, Lq, Lk})};
  EXPECT_NO_THROW(attention_backward(q, view(k.data(), {B, H, Lk, D}), view(v.data(), {B, H, Lk, D}),
                                     out, lse, dout, params, grads));
  for (float x : dk) EXPECT_EQ(x, 0.0f);  // keys no row sees
  for (float x : dv) EXPECT_EQ(x, 0.0f);
}

// attention_fuzz: a stride of INT64_MIN, whose magnitude check_view negated (signed overflow,
// caught by UBSan). On a dim longer than 1 it is refused; on a dim of size 1 it is never used.
TEST(FuzzRegressions, StrideOfInt64MinIsRefusedOnlyWhereItIsUsed) {
  const int64_t L = 4, D = 8;
  std::vector<float> q(L * D, 0.5f), k(L * D, 0.25f), v(L * D, 1.0f), out(L * D, 42.0f);
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  const TensorView kv = view(k.data(), {1, 1, L, D}), vv = view(v.data(), {1, 1, L, D});
  TensorView qv = view(q.data(), {1, 1, L, D});
  qv.layout.strides[2] = kMin;  // L = 4 rows
  EXPECT_THROW(attention(qv, kv, vv, {}, {view(out.data(), {1, 1, L, D})}), Error);
  for (float x : out) ASSERT_EQ(x, 42.0f);
  qv = view(q.data(), {1, 1, L, D});
  qv.layout.strides[0] = kMin;  // B = 1: never multiplied by a non-zero index
  EXPECT_NO_THROW(attention(qv, kv, vv, {}, {view(out.data(), {1, 1, L, D})}));
  EXPECT_FLOAT_EQ(out[0], 1.0f);
}


// attention_fuzz: a backward with a softcap, and NaN in a key that no row sees (causal). The
// tanh slope of its NaN score was applied after the key was masked out, so its zero score
// gradient became 0·NaN = NaN in dK.
TEST(FuzzRegressions, SoftcapBackwardIgnoresNonFiniteUnseenKeys) {
  const int64_t Lq = 2, Lk = 8, D = 1;
  std::vector<float> q(Lq * D, 0.5f), k(Lk * D, 0.25f), v(Lk * D, 1.0f), dout(Lq * D, 1.0f);
  std::vector<float> out(Lq * D), lse(Lq), dq(q.size()), dk(k.size(), 7.0f), dv(v.size(), 7.0f);
  for (int64_t j = Lq; j < Lk; ++j) k[j] = std::numeric_limits<float>::quiet_NaN();
  const TensorView qv = view(q.data(), {1, 1, Lq, D}), kv = view(k.data(), {1, 1, Lk, D});
  const TensorView vv = view(v.data(), {1, 1, Lk, D});
  AttentionParams params;
  params.causal = true;  // top-left: row i sees keys 0..i
  params.softcap = 2.0f;
  attention(qv, kv, vv, params, {view(out.data(), {1, 1, Lq, D}), view(lse.data(), {1, 1, Lq})});
  AttentionGradients grads{view(dq.data(), {1, 1, Lq, D}), view(dk.data(), {1, 1, Lk, D}),
                           view(dv.data(), {1, 1, Lk, D})};
  attention_backward(qv, kv, vv, view(out.data(), {1, 1, Lq, D}), view(lse.data(), {1, 1, Lq}),
                     view(dout.data(), {1, 1, Lq, D}), params, grads);
  for (int64_t j = Lq; j < Lk; ++j) EXPECT_EQ(dk[j], 0.0f) << "key " << j;
  for (int64_t j = Lq; j < Lk; ++j) EXPECT_EQ(dv[j], 0.0f) << "key " << j;
  for (float x : dq) EXPECT_TRUE(std::isfinite(x));
  // Every V row is 1, so the output is 1 and its gradient flows to no score: dq = dk = 0.
  for (int64_t j = 0; j < Lq; ++j) EXPECT_NEAR(dk[j], 0.0f, 1e-6f) << "key " << j;
}

// attention_fuzz: a backward with no query rows, kv_lens shorter than the keys, and more
// threads than (sequence, kv head) pairs. That split runs a pass per tile of query rows, which
// also zeroed the gradients of the keys past kv_len; with no rows there were no tiles, and
// those gradients kept what the buffer held.
TEST(FuzzRegressions, BackwardWithoutQueryRowsZeroesKeysPastTheirLength) {
  const int64_t B = 1, H = 1, Lq = 0, Lk = 8, D = 3;
  float none = 0;
  const int64_t kv_lens[] = {5};
  std::vector<float> k(Lk * D, 0.5f), v(Lk * D, 1.0f), dk(k.size(), 7.0f), dv(v.size(), 7.0f);
  AttentionParams params;
  params.kv_lens = kv_lens;
  params.num_threads = 2;
  AttentionGradients grads{view(&none, {B, H, Lq, D}), view(dk.data(), {B, H, Lk, D}),
                           view(dv.data(), {B, H, Lk, D})};
  attention_backward(view(&none, {B, H, Lq, D}), view(k.data(), {B, H, Lk, D}),
                     view(v.data(), {B, H, Lk, D}), view(&none, {B, H, Lq, D}),
                     view(&none, {B, H, Lq}), view(&none, {B, H, Lq, D}), params, grads);
  for (float x : dk) EXPECT_EQ(x, 0.0f);
  for (float x : dv) EXPECT_EQ(x, 0.0f);
}

}  // namespace
}  // namespace xattn
