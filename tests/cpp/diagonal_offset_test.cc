// AttentionParams::diagonal_offset: against the float64 oracle, and the property it exists for:
// attention over shards of the keys, each told where its keys start, merged by log-sum-exp,
// equals the unsharded call (forward), and the shards' backward calls with the whole call's out
// and lse give its gradients (dq summed over shards, dk and dv shard by shard).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "oracle_util.h"

namespace xattn::testing {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Random cases with an offset added; causal or windowed more often, so that it matters.
TEST(DiagonalOffset, RandomConfigurationsMatchOracle) {
  std::mt19937_64 rng(615);
  std::mt19937_64 offsets(616);  // a stream of its own: random_case's draws stay as elsewhere
  int failures = 0;
  for (int n = 0; n < 120; ++n) {
    RandomCase c = random_case(rng);
    const int64_t choices[] = {-300, -40, -7, -1, 1, 5, 33, 250};
    c.ref.diagonal_offset = choices[std::uniform_int_distribution<int>(0, 7)(offsets)];
    if (std::bernoulli_distribution(0.5)(offsets)) c.ref.causal = true;
    const Check check = compare(c, run_xattn(c), reference::attention(c.ref));
    if (check.worst_ratio > 1.0 && ++failures <= 10)
      ADD_FAILURE() << "case " << n << ": " << c.describe() << "\n  " << check.where
                    << " (error/tolerance = " << check.worst_ratio << ")";
  }
  EXPECT_EQ(failures, 0);
}

// The backward with an offset against the oracle's gradients (f32 cases, whose tolerance is
// backward_test.cc's: 1e-5 of the sum of the terms' magnitudes, plus the lse's rounding).
TEST(DiagonalOffset, BackwardMatchesOracle) {
  std::mt19937_64 rng(617);
  std::mt19937_64 offsets(618);
  std::normal_distribution<double> normal(0.0, 1.0);
  int checked = 0;
  for (int n = 0; n < 200 && checked < 30; ++n) {
    RandomCase c = random_case(rng);
    if (c.dtype != DType::kF32 || c.out_dtype != DType::kF32) continue;
    ++checked;
    c.ref.causal = true;
    c.ref.diagonal_offset = std::uniform_int_distribution<int64_t>(-c.ref.kv_len, c.ref.kv_len)(offsets);
    std::vector<double> dout(c.ref.batch * c.ref.heads_q * c.ref.q_len * c.ref.value_dim);
    for (double& x : dout) x = normal(offsets);
    const reference::Gradients want = reference::attention_backward(c.ref, dout);
    double max_lse = 0;
    for (double l : reference::attention(c.ref).lse)
      if (std::isfinite(l)) max_lse = std::max(max_lse, std::abs(l));
    const reference::Gradients got = run_xattn_backward(c, dout);
    const struct {
      const std::vector<double>&got, &want, &scale;
      const char* name;
    } all[] = {{got.dq, want.dq, want.dq_scale, "dq"},
               {got.dk, want.dk, want.dk_scale, "dk"},
               {got.dv, want.dv, want.dv_scale, "dv"}};
    for (const auto& g : all)
      for (size_t i = 0; i < g.want.size(); ++i)
        ASSERT_NEAR(g.got[i], g.want[i], (1e-5 + 0x1p-21 * max_lse) * g.scale[i] + 1e-7)
            << g.name << "[" << i << "] of case " << n << ": " << c.describe();
  }
  EXPECT_GE(checked, 10);
}

// One problem, f32, contiguous [B, H, L, D] tensors; the keys split into shards at `cuts`.
struct Sharded {
  static constexpr int64_t B = 2, Hq = 4, Hkv = 2, Lq = 37, Lk = 101, D = 16, Dv = 12;
  std::vector<float> q, k, v, dout;
  Sharded() {
    std::mt19937_64 rng(619);
    std::normal_distribution<float> normal;
    q.resize(B * Hq * Lq * D), k.resize(B * Hkv * Lk * D), v.resize(B * Hkv * Lk * Dv);
    dout.resize(B * Hq * Lq * Dv);
    for (auto* t : {&q, &k, &v, &dout})
      for (float& x : *t) x = normal(rng);
  }
  // Keys [first, first + count) of a [B, Hkv, Lk, width] tensor, as a view of the same memory.
  static TensorView keys(const std::vector<float>& t, int64_t width, int64_t first, int64_t count) {
    return {t.data() + first * width, DType::kF32,
            Layout::strided({B, Hkv, count, width}, {Hkv * Lk * width, Lk * width, width, 1})};
  }
  static MutableTensorView keys(std::vector<float>& t, int64_t width, int64_t first, int64_t count) {
    return {t.data() + first * width, DType::kF32,
            Layout::strided({B, Hkv, count, width}, {Hkv * Lk * width, Lk * width, width, 1})};
  }
};

struct ShardCase {
  const char* name;
  bool causal;
  CausalAlign align;
  Window window;
};

// Every row's diagonal of the whole problem, in a shard whose keys start at `first`: the
// shard is called top-left, with the whole problem's diagonal moved to the shard's key 0.
AttentionParams shard_params(const ShardCase& sc, int64_t first) {
  AttentionParams p;
  p.causal = sc.causal;
  p.window = sc.window;
  const int64_t whole_shift = sc.align == CausalAlign::kBottomRight ? Sharded::Lk - Sharded::Lq : 0;
  p.diagonal_offset = whole_shift - first;
  return p;
}

const ShardCase kShardCases[] = {
    {"causal top-left", true, CausalAlign::kTopLeft, {}},
    {"causal bottom-right", true, CausalAlign::kBottomRight, {}},
    {"window (5, 3) top-left", false, CausalAlign::kTopLeft, {5, 3}},
    {"window (9, 0) bottom-right", false, CausalAlign::kBottomRight, {9, 0}},
    {"causal and window (20, -1)", true, CausalAlign::kTopLeft, {20, -1}},
    {"window (INT64_MAX, 2)", false, CausalAlign::kTopLeft, {INT64_MAX, 2}},
};

// Shard boundaries: uneven, one shard empty, one shard that lies past every causal diagonal.
const std::vector<int64_t> kCuts = {0, 30, 30, 41, 77, 101};

TEST(DiagonalOffset, KeyShardsMergeIntoTheWhole) {
  using S = Sharded;
  const S s;
  for (const ShardCase& sc : kShardCases) {
    SCOPED_TRACE(sc.name);
    AttentionParams whole_params;
    whole_params.causal = sc.causal, whole_params.align = sc.align, whole_params.window = sc.window;
    std::vector<float> whole(S::B * S::Hq * S::Lq * S::Dv), whole_lse(S::B * S::Hq * S::Lq);
    attention(view(s.q.data(), {S::B, S::Hq, S::Lq, S::D}), S::keys(s.k, S::D, 0, S::Lk),
              S::keys(s.v, S::Dv, 0, S::Lk), whole_params,
              {view(whole.data(), {S::B, S::Hq, S::Lq, S::Dv}),
               view(whole_lse.data(), {S::B, S::Hq, S::Lq})});
    // The merge in shard order from "no keys yet": out 0, lse -inf.
    std::vector<float> out(whole.size(), 0.0f), lse(whole_lse.size(), -kInf);
    std::vector<float> part(whole.size()), part_lse(whole_lse.size());
    for (size_t c = 0; c + 1 < kCuts.size(); ++c) {
      const int64_t first = kCuts[c], count = kCuts[c + 1] - kCuts[c];
      attention(view(s.q.data(), {S::B, S::Hq, S::Lq, S::D}), S::keys(s.k, S::D, first, count),
                S::keys(s.v, S::Dv, first, count), shard_params(sc, first),
                {view(part.data(), {S::B, S::Hq, S::Lq, S::Dv}),
                 view(part_lse.data(), {S::B, S::Hq, S::Lq})});
      merge(view(out.data(), {S::B, S::Hq, S::Lq, S::Dv}), view(lse.data(), {S::B, S::Hq, S::Lq}),
            view(part.data(), {S::B, S::Hq, S::Lq, S::Dv}),
            view(part_lse.data(), {S::B, S::Hq, S::Lq}),
            view(out.data(), {S::B, S::Hq, S::Lq, S::Dv}), view(lse.data(), {S::B, S::Hq, S::Lq}));
    }
    for (size_t i = 0; i < whole.size(); ++i) ASSERT_NEAR(out[i], whole[i], 2e-6) << i;
    for (size_t i = 0; i < whole_lse.size(); ++i) {
      if (std::isinf(whole_lse[i])) ASSERT_EQ(lse[i], whole_lse[i]) << i;
      else ASSERT_NEAR(lse[i], whole_lse[i], 2e-6) << i;
    }
  }
}

TEST(DiagonalOffset, KeyShardsBackwardGivesTheWholeGradients) {
  using S = Sharded;
  const S s;
  for (const ShardCase& sc : kShardCases) {
    SCOPED_TRACE(sc.name);
    AttentionParams whole_params;
    whole_params.causal = sc.causal, whole_params.align = sc.align, whole_params.window = sc.window;
    std::vector<float> out(S::B * S::Hq * S::Lq * S::Dv), lse(S::B * S::Hq * S::Lq);
    std::vector<float> dq(s.q.size()), dk(s.k.size()), dv(s.v.size());
    const TensorView q = view(s.q.data(), {S::B, S::Hq, S::Lq, S::D});
    const TensorView o = view(out.data(), {S::B, S::Hq, S::Lq, S::Dv});
    const TensorView l = view(lse.data(), {S::B, S::Hq, S::Lq});
    const TensorView dout = view(s.dout.data(), {S::B, S::Hq, S::Lq, S::Dv});
    attention(q, S::keys(s.k, S::D, 0, S::Lk), S::keys(s.v, S::Dv, 0, S::Lk), whole_params,
              {view(out.data(), {S::B, S::Hq, S::Lq, S::Dv}), view(lse.data(), {S::B, S::Hq, S::Lq})});
    attention_backward(q, S::keys(s.k, S::D, 0, S::Lk), S::keys(s.v, S::Dv, 0, S::Lk), o, l, dout,
                       whole_params,
                       {view(dq.data(), {S::B, S::Hq, S::Lq, S::D}), S::keys(dk, S::D, 0, S::Lk),
                        S::keys(dv, S::Dv, 0, S::Lk)});
    // Each shard's backward, given the whole forward's out and lse: its dk, dv are the whole's
    // for its keys, and its dq is its keys' share of the whole dq.
    std::vector<float> dq_sum(dq.size(), 0.0f), dq_part(dq.size()), dk_sh(dk.size()), dv_sh(dv.size());
    for (size_t c = 0; c + 1 < kCuts.size(); ++c) {
      const int64_t first = kCuts[c], count = kCuts[c + 1] - kCuts[c];
      attention_backward(q, S::keys(s.k, S::D, first, count), S::keys(s.v, S::Dv, first, count),
                         o, l, dout, shard_params(sc, first),
                         {view(dq_part.data(), {S::B, S::Hq, S::Lq, S::D}),
                          S::keys(dk_sh, S::D, first, count), S::keys(dv_sh, S::Dv, first, count)});
      for (size_t i = 0; i < dq.size(); ++i) dq_sum[i] += dq_part[i];
    }
    // Sums of ~100 f32 terms of size ~1, in another order: a few 1e-6 at most.
    for (size_t i = 0; i < dq.size(); ++i) ASSERT_NEAR(dq_sum[i], dq[i], 1e-5) << "dq " << i;
    for (size_t i = 0; i < dk.size(); ++i) ASSERT_NEAR(dk_sh[i], dk[i], 1e-5) << "dk " << i;
    for (size_t i = 0; i < dv.size(); ++i) ASSERT_NEAR(dv_sh[i], dv[i], 1e-5) << "dv " << i;
  }
}

// The edges: offsets far beyond the problem see every key or none (no overflow on the way),
// and offsets whose reach overflows the index arithmetic are refused, naming the argument.
TEST(DiagonalOffset, FarOffsetsSaturateAndHugeOnesAreRefused) {
  const int64_t Lq = 3, Lk = 5, D = 4;
  std::vector<float> q(Lq * D, 0.5f), k(Lk * D, 0.25f), v(Lk * D);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  std::vector<float> out(Lq * D), lse(Lq), all(Lq * D), all_lse(Lq);
  auto run = [&](AttentionParams p, std::vector<float>& o, std::vector<float>& l) {
    attention(view(q.data(), {1, 1, Lq, D}), view(k.data(), {1, 1, Lk, D}),
              view(v.data(), {1, 1, Lk, D}), p, {view(o.data(), {1, 1, Lq, D}), view(l.data(), {1, 1, Lq})});
  };
  run({}, all, all_lse);
  AttentionParams p;
  p.causal = true;
  p.diagonal_offset = int64_t{1} << 40;  // every key lies before every diagonal
  run(p, out, lse);
  EXPECT_EQ(out, all);
  p.diagonal_offset = -(int64_t{1} << 40);  // every key lies after every diagonal
  run(p, out, lse);
  for (float x : out) EXPECT_EQ(x, 0.0f);
  for (float x : lse) EXPECT_EQ(x, -kInf);
  p.causal = false;
  p.window = {INT64_MAX, INT64_MAX};  // unbounded, however far the diagonal moved
  run(p, out, lse);
  EXPECT_EQ(out, all);
  for (const int64_t bad : {INT64_MAX, INT64_MIN, (int64_t{1} << 61) + 1, -(int64_t{1} << 61)}) {
    p.diagonal_offset = bad;
    try {
      run(p, out, lse);
      ADD_FAILURE() << "diagonal_offset " << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("diagonal_offset"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace xattn::testing
