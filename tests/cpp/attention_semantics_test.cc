// Specific promises of the forward: empty rows, masked NaN/Inf, determinism, key splits,
// varlen, GQA without copies.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "oracle_util.h"

namespace xattn::testing {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> randn(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

std::vector<double> to_double(const std::vector<float>& x) { return {x.begin(), x.end()}; }

reference::Problem ref_problem(int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk,
                               int64_t D, int64_t Dv, const std::vector<float>& q,
                               const std::vector<float>& k, const std::vector<float>& v) {
  reference::Problem p;
  p.batch = B, p.heads_q = Hq, p.heads_kv = Hkv, p.q_len = Lq, p.kv_len = Lk, p.head_dim = D,
  p.value_dim = Dv;
  p.q = to_double(q), p.k = to_double(k), p.v = to_double(v);
  p.scale = 1.0 / std::sqrt(static_cast<double>(D));
  return p;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST(AttentionSemantics, RowsThatSeeNoKeyGiveZeroMinusInfAndZeroWeights) {
  // Batch 0: bottom-right causal with Lq > Lk, so the first Lq - Lk rows see no key.
  // Batch 1: kv_lens = 0. A bool mask also blocks every key of row 5 in batch 0.
  const int64_t B = 2, H = 1, Lq = 9, Lk = 4, D = 8;
  auto q = randn(B * H * Lq * D, 1), k = randn(B * H * Lk * D, 2), v = randn(B * H * Lk * D, 3);
  std::vector<uint8_t> mask(B * Lq * Lk, 1);
  for (int64_t j = 0; j < Lk; ++j) mask[5 * Lk + j] = 0;
  std::vector<float> out(B * H * Lq * D, 7.0f), lse(B * H * Lq, 7.0f), w(B * H * Lq * Lk, 7.0f);
  const int64_t kv_lens[] = {Lk, 0};
  AttentionParams params;
  params.causal = true;
  params.align = CausalAlign::kBottomRight;
  params.kv_lens = kv_lens;
  params.mask = {mask.data(), DType::kBool, Layout::contiguous({B, 1, Lq, Lk})};
  attention(view(q.data(), {B, H, Lq, D}), view(k.data(), {B, H, Lk, D}),
            view(v.data(), {B, H, Lk, D}), params,
            {view(out.data(), {B, H, Lq, D}), view(lse.data(), {B, H, Lq}),
             view(w.data(), {B, H, Lq, Lk})});
  auto row_is_empty = [&](int64_t b, int64_t i) {
    const int64_t row = b * Lq + i;
    for (int64_t e = 0; e < D; ++e) EXPECT_EQ(out[row * D + e], 0.0f) << b << "," << i;
    for (int64_t j = 0; j < Lk; ++j) EXPECT_EQ(w[row * Lk + j], 0.0f) << b << "," << i;
    EXPECT_EQ(lse[row], -kInf) << b << "," << i;
  };
  for (int64_t i = 0; i < Lq - Lk; ++i) row_is_empty(0, i);
  row_is_empty(0, 5);
  for (int64_t i = 0; i < Lq; ++i) row_is_empty(1, i);
  EXPECT_TRUE(std::isfinite(lse[Lq - 1]));  // the last row of batch 0 sees every key
}

TEST(AttentionSemantics, MaskedKeysNeverReachTheOutputEvenAsNaNOrInf) {
  const int64_t Lq = 70, Lk = 150, D = 16;
  auto q = randn(Lq * D, 4), k = randn(Lk * D, 5), v = randn(Lk * D, 6);
  reference::Problem ref = ref_problem(1, 1, 1, Lq, Lk, D, D, q, k, v);
  // Keys beyond kv_len and keys masked by a bool mask hold NaN and Inf.
  const int64_t kv_len = 120;
  std::vector<uint8_t> mask(Lq * Lk, 1);
  for (int64_t i = 0; i < Lq; ++i) mask[i * Lk + 7] = 0;  // key 7 masked for every row
  ref.mask.assign(Lq * Lk, 0.0);
  for (int64_t i = 0; i < Lq; ++i) ref.mask[i * Lk + 7] = -INFINITY;
  ref.kv_lens = {kv_len};
  ref.causal = true;
  ref.bottom_right = true;
  const reference::Result want = reference::attention(ref);
  for (int64_t d = 0; d < D; ++d) {
    k[7 * D + d] = NAN, v[7 * D + d] = INFINITY;
    for (int64_t j = kv_len; j < Lk; ++j) k[j * D + d] = INFINITY, v[j * D + d] = NAN;
  }
  std::vector<float> out(Lq * D);
  const int64_t kv_lens[] = {kv_len};
  AttentionParams params;
  params.kv_lens = kv_lens;
  params.causal = true;
  params.align = CausalAlign::kBottomRight;
  params.mask = {mask.data(), DType::kBool, Layout::contiguous({Lq, Lk})};
  for (int threads : {1, 2}) {
    params.num_threads = threads;
    attention(view(q.data(), {1, 1, Lq, D}), view(k.data(), {1, 1, Lk, D}),
              view(v.data(), {1, 1, Lk, D}), params, {view(out.data(), {1, 1, Lq, D})});
    for (float x : out) ASSERT_TRUE(std::isfinite(x));
    EXPECT_LE(max_abs_diff(out, want.out), 1e-5 * 4.5);
  }
}

TEST(AttentionSemantics, VisibleNaNPropagatesToItsRowsOnly) {
  const int64_t Lq = 3, Lk = 5, D = 4;
  auto q = randn(Lq * D, 7), k = randn(Lk * D, 8), v = randn(Lk * D, 9);
  v[2 * D + 1] = NAN;  // key 2: visible to rows 2.. under top-left causal
  std::vector<float> out(Lq * D);
  AttentionParams params;
  params.causal = true;
  attention(view(q.data(), {1, 1, Lq, D}), view(k.data(), {1, 1, Lk, D}),
            view(v.data(), {1, 1, Lk, D}), params, {view(out.data(), {1, 1, Lq, D})});
  for (int64_t e = 0; e < D; ++e) EXPECT_TRUE(std::isfinite(out[0 * D + e]));
  for (int64_t e = 0; e < D; ++e) EXPECT_TRUE(std::isfinite(out[1 * D + e]));
  EXPECT_TRUE(std::isnan(out[2 * D + 1]));
}

TEST(AttentionSemantics, SameInputsAndThreadsGiveTheSameBits) {
  const int64_t B = 2, Hq = 4, Hkv = 2, Lq = 300, Lk = 257, D = 64;
  auto q = randn(B * Hq * Lq * D, 10), k = randn(B * Hkv * Lk * D, 11), v = randn(B * Hkv * Lk * D, 12);
  for (int threads : {1, 2, 3}) {
    std::vector<float> a(B * Hq * Lq * D), b(a.size());
    AttentionParams params;
    params.causal = true;
    params.num_threads = threads;
    for (auto* out : {&a, &b})
      attention(view(q.data(), {B, Hq, Lq, D}), view(k.data(), {B, Hkv, Lk, D}),
                view(v.data(), {B, Hkv, Lk, D}), params, {view(out->data(), {B, Hq, Lq, D})});
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << threads;
  }
}

TEST(AttentionSemantics, KeySplitsForOneQueryMatchTheOracleAndAreDeterministic) {
  // Lq = 1 with few heads: too few row tiles for the threads, so keys are split and merged.
  const int64_t Hq = 4, Hkv = 1, Lk = 5000, D = 64;
  auto q = randn(Hq * D, 13), k = randn(Lk * D, 14), v = randn(Lk * D, 15);
  const reference::Result want = reference::attention(ref_problem(1, Hq, Hkv, 1, Lk, D, D, q, k, v));
  for (int threads : {1, 2, 8}) {
    std::vector<float> out(Hq * D), again(Hq * D), lse(Hq);
    AttentionParams params;
    params.num_threads = threads;
    for (auto* o : {&out, &again})
      attention(view(q.data(), {1, Hq, 1, D}), view(k.data(), {1, Hkv, Lk, D}),
                view(v.data(), {1, Hkv, Lk, D}), params,
                {view(o->data(), {1, Hq, 1, D}), view(lse.data(), {1, Hq, 1})});
    EXPECT_LE(max_abs_diff(out, want.out), 1e-5 * 5) << threads;
    EXPECT_LE(max_abs_diff(lse, want.lse), 1e-4) << threads;
    EXPECT_EQ(std::memcmp(out.data(), again.data(), out.size() * 4), 0) << threads;
  }
}

TEST(AttentionSemantics, VarlenEqualsEachSequenceAlone) {
  const std::vector<int64_t> q_lens = {5, 0, 70, 1}, k_lens = {9, 3, 66, 0};
  const int64_t Hq = 4, Hkv = 2, D = 17, Dv = 9;
  std::vector<int64_t> cu_q = {0}, cu_k = {0};
  for (size_t b = 0; b < q_lens.size(); ++b)
    cu_q.push_back(cu_q.back() + q_lens[b]), cu_k.push_back(cu_k.back() + k_lens[b]);
  const int64_t Tq = cu_q.back(), Tk = cu_k.back(), max_k = 66;
  auto q = randn(Tq * Hq * D, 16), k = randn(Tk * Hkv * D, 17), v = randn(Tk * Hkv * Dv, 18);
  std::vector<float> out(Tq * Hq * Dv, 9.0f), lse(Hq * Tq), w(Hq * Tq * max_k);
  for (bool causal : {false, true}) {
    AttentionParams params;
    params.causal = causal;
    params.align = CausalAlign::kBottomRight;
    attention_varlen(view(q.data(), {Tq, Hq, D}), view(k.data(), {Tk, Hkv, D}),
                     view(v.data(), {Tk, Hkv, Dv}), cu_q, cu_k, params,
                     {view(out.data(), {Tq, Hq, Dv}), view(lse.data(), {Hq, Tq}),
                      view(w.data(), {Hq, Tq, max_k})});
    for (size_t b = 0; b < q_lens.size(); ++b) {
      const int64_t Lq = q_lens[b], Lk = k_lens[b];
      if (Lq == 0) continue;
      // The sequence alone, as a dense [1, H, L, D] problem for the oracle.
      reference::Problem ref;
      ref.heads_q = Hq, ref.heads_kv = Hkv, ref.q_len = Lq, ref.kv_len = std::max<int64_t>(Lk, 1);
      ref.head_dim = D, ref.value_dim = Dv, ref.scale = 1.0 / std::sqrt(double(D));
      ref.causal = causal, ref.bottom_right = true;
      ref.kv_lens = {Lk};
      ref.q.resize(Hq * Lq * D), ref.k.assign(Hkv * ref.kv_len * D, 0), ref.v.assign(Hkv * ref.kv_len * Dv, 0);
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < Lq; ++i)
          for (int64_t d = 0; d < D; ++d)
            ref.q[(h * Lq + i) * D + d] = q[((cu_q[b] + i) * Hq + h) * D + d];
      for (int64_t h = 0; h < Hkv; ++h)
        for (int64_t j = 0; j < Lk; ++j) {
          for (int64_t d = 0; d < D; ++d) ref.k[(h * ref.kv_len + j) * D + d] = k[((cu_k[b] + j) * Hkv + h) * D + d];
          for (int64_t d = 0; d < Dv; ++d) ref.v[(h * ref.kv_len + j) * Dv + d] = v[((cu_k[b] + j) * Hkv + h) * Dv + d];
        }
      const reference::Result want = reference::attention(ref);
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < Lq; ++i) {
          for (int64_t e = 0; e < Dv; ++e)
            ASSERT_NEAR(out[((cu_q[b] + i) * Hq + h) * Dv + e], want.out[(h * Lq + i) * Dv + e], 5e-5)
                << "seq " << b << " head " << h << " row " << i << " causal " << causal;
          const double got_lse = lse[h * Tq + cu_q[b] + i], want_lse = want.lse[h * Lq + i];
          if (std::isinf(want_lse)) EXPECT_EQ(got_lse, want_lse);
          else EXPECT_NEAR(got_lse, want_lse, 1e-4);
          for (int64_t j = 0; j < max_k; ++j) {
            const double wj = j < Lk ? want.weights[(h * Lq + i) * ref.kv_len + j] : 0.0;
            ASSERT_NEAR(w[(h * Tq + cu_q[b] + i) * max_k + j], wj, 1e-5);
          }
        }
    }
  }
}

TEST(AttentionSemantics, GroupedQueryHeadsReadTheirSharedKvHead) {
  // MQA: 6 query heads, 1 kv head, against the oracle; K and V are passed once.
  std::mt19937_64 rng(19);
  const int64_t Hq = 6, Lq = 33, Lk = 65, D = 32;
  auto q = randn(Hq * Lq * D, 20), k = randn(Lk * D, 21), v = randn(Lk * D, 22);
  const reference::Result want = reference::attention(ref_problem(1, Hq, 1, Lq, Lk, D, D, q, k, v));
  std::vector<float> out(Hq * Lq * D);
  attention(view(q.data(), {1, Hq, Lq, D}), view(k.data(), {1, 1, Lk, D}),
            view(v.data(), {1, 1, Lk, D}), {}, {view(out.data(), {1, Hq, Lq, D})});
  EXPECT_LE(max_abs_diff(out, want.out), 5e-5);
}

}  // namespace
}  // namespace xattn::testing
