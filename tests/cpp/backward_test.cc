// attention_backward against the float64 oracle's gradients (reference_backward_test.cc checks
// those against finite differences), over random configurations with every forward feature, on
// every SIMD target.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "oracle_util.h"

namespace xattn::testing {
namespace {

constexpr int kCases = 160;
// Every gradient is a sum of f32 products of f32 sums; its rounding error is a small multiple
// of f32's 6e-8 times the sum of the absolute values of its terms (the oracle's *_scale), which
// 1e-5 bounds with room for sums of a few hundred terms. On top of that, p is recomputed as
// e^(z - lse) from the forward's f32 lse and a recomputed f32 score, each rounded by up to
// 2^-24 of their size: a relative error in p of a few 2^-24·|lse| (kLseTol).
constexpr double kRelTol = 1e-5;
constexpr double kLseTol = 0x1p-21;

class TargetScope {
 public:
  explicit TargetScope(const std::string& t) { force_simd_target(t); }
  ~TargetScope() { force_simd_target(""); }
};

// Worst |got - want| / tolerance over one gradient tensor; <= 1 passes. A 16-bit gradient dtype
// adds its own rounding, rel_out of the value.
double worst_ratio(const std::vector<double>& got, const std::vector<double>& want,
                   const std::vector<double>& scale, double max_lse, double rel_out,
                   std::string& where, const char* name) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double tol =
        (kRelTol + kLseTol * max_lse) * scale[i] + rel_out * std::abs(want[i]) + 1e-7;
    const double r = std::isnan(got[i]) ? INFINITY : std::abs(got[i] - want[i]) / tol;
    if (r > worst) {
      worst = r;
      where = std::string(name) + "[" + std::to_string(i) + "] got " + std::to_string(got[i]) +
              " want " + std::to_string(want[i]);
    }
  }
  return worst;
}

TEST(AttentionBackward, RandomConfigurationsMatchOracleOnEveryTarget) {
  std::mt19937_64 rng(77);
  std::normal_distribution<double> normal(0.0, 1.0);
  int failures = 0;
  double worst_seen = 0;
  for (int n = 0; n < kCases; ++n) {
    const RandomCase c = random_case(rng);
    const reference::Problem& p = c.ref;
    std::vector<double> dout(p.batch * p.heads_q * p.q_len * p.value_dim);
    for (double& x : dout) x = normal(rng);
    const reference::Gradients want = reference::attention_backward(p, dout);
    std::vector<double> dmask_want, dmask_scale;
    if (c.mask_kind == RandomCase::MaskKind::kFloat) {
      dmask_want = reduce_to_mask_shape(c, want.dmask);
      dmask_scale = reduce_to_mask_shape(c, want.dmask_scale);
    }
    double max_lse = 0;
    for (double l : reference::attention(p).lse)
      if (std::isfinite(l)) max_lse = std::max(max_lse, std::abs(l));
    const double rel_out = c.out_dtype == DType::kF16 ? 0x1p-11 : c.out_dtype == DType::kBF16 ? 0x1p-8 : 0;
    for (const std::string& target : available_simd_targets()) {
      TargetScope scope(target);
      const reference::Gradients got = run_xattn_backward(c, dout);
      std::string where;
      double worst = 0;
      std::vector<std::tuple<const std::vector<double>*, const std::vector<double>*,
                             const std::vector<double>*, const char*, double>>
          tensors = {{&got.dq, &want.dq, &want.dq_scale, "dq", rel_out},
                     {&got.dk, &want.dk, &want.dk_scale, "dk", rel_out},
                     {&got.dv, &want.dv, &want.dv_scale, "dv", rel_out}};
      if (c.mask_kind == RandomCase::MaskKind::kFloat)  // dmask is always f32 here
        tensors.push_back({&got.dmask, &dmask_want, &dmask_scale, "dmask", 0.0});
      for (auto [g, w, m, name, rel] : tensors) {
        std::string at;
        const double r = worst_ratio(*g, *w, *m, max_lse, rel, at, name);
        if (r > worst) worst = r, where = at;
      }
      worst_seen = std::max(worst_seen, worst);
      if (worst > 1.0 && ++failures <= 10)
        ADD_FAILURE() << "case " << n << " on " << target << ": " << c.describe() << "\n  " << where
                      << " (error/tolerance = " << worst << ")";
    }
  }
  EXPECT_EQ(failures, 0);
  std::printf("worst error/tolerance: %.3g\n", worst_seen);  // near 1: a bf16 rounding
}

// Each gradient has one writer that sums in a fixed order, so the thread count cannot change
// a bit of the result.
TEST(AttentionBackward, SameBitsForAnyThreadCount) {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int n = 0; n < 20; ++n) {
    RandomCase c = random_case(rng);
    std::vector<double> dout(c.ref.batch * c.ref.heads_q * c.ref.q_len * c.ref.value_dim);
    for (double& x : dout) x = normal(rng);
    c.threads = 1;  // the forward's, so that every backward sees the same out and lse
    const reference::Gradients one = run_xattn_backward(c, dout, 1);
    for (int threads : {2, 3, 8}) {
      const reference::Gradients many = run_xattn_backward(c, dout, threads);
      EXPECT_EQ(one.dq, many.dq) << threads << " threads: " << c.describe();
      EXPECT_EQ(one.dk, many.dk) << threads << " threads: " << c.describe();
      EXPECT_EQ(one.dv, many.dv) << threads << " threads: " << c.describe();
    }
  }
}

}  // namespace
}  // namespace xattn::testing

namespace xattn::testing {
namespace {

// Packed sequences: each sequence's gradients are those of the sequence alone (float64 oracle).
TEST(AttentionBackward, VarlenMatchesEachSequenceAlone) {
  const std::vector<int64_t> len_q = {5, 0, 9}, len_k = {7, 3, 12};
  const int64_t Hq = 4, Hkv = 2, D = 16, Dv = 8;
  std::vector<int64_t> cu_q = {0}, cu_k = {0};
  for (size_t b = 0; b < len_q.size(); ++b)
    cu_q.push_back(cu_q.back() + len_q[b]), cu_k.push_back(cu_k.back() + len_k[b]);
  const int64_t Tq = cu_q.back(), Tk = cu_k.back();
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random = [&](int64_t n) {
    std::vector<float> x(n);
    for (float& e : x) e = normal(rng);
    return x;
  };
  std::vector<float> q = random(Tq * Hq * D), k = random(Tk * Hkv * D), v = random(Tk * Hkv * Dv);
  std::vector<float> dout = random(Tq * Hq * Dv), out(Tq * Hq * Dv), lse(Hq * Tq);
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
  AttentionParams params;
  params.causal = true;
  params.align = CausalAlign::kBottomRight;
  params.num_threads = 2;
  const TensorView qv = view(q.data(), {Tq, Hq, D}), kv = view(k.data(), {Tk, Hkv, D});
  const TensorView vv = view(v.data(), {Tk, Hkv, Dv});
  attention_varlen(qv, kv, vv, cu_q, cu_k, params,
                   {view(out.data(), {Tq, Hq, Dv}), view(lse.data(), {Hq, Tq})});
  attention_varlen_backward(qv, kv, vv, cu_q, cu_k, view(out.data(), {Tq, Hq, Dv}),
                            view(lse.data(), {Hq, Tq}), view(dout.data(), {Tq, Hq, Dv}), params,
                            {view(dq.data(), {Tq, Hq, D}), view(dk.data(), {Tk, Hkv, D}),
                             view(dv.data(), {Tk, Hkv, Dv})});
  for (size_t b = 0; b < len_q.size(); ++b) {
    reference::Problem p;
    p.heads_q = Hq, p.heads_kv = Hkv, p.q_len = std::max<int64_t>(len_q[b], 1);
    p.kv_len = len_k[b], p.head_dim = D, p.value_dim = Dv;
    p.causal = true, p.bottom_right = true, p.scale = 1.0 / std::sqrt(double(D));
    if (len_q[b] == 0) p.q_lens = {0};  // an empty sequence: a dense row that sees nothing
    // Packed [T, H, X] rows of this sequence, as dense [1, H, L, X].
    auto gather = [&](const std::vector<float>& t, int64_t start, int64_t len, int64_t H,
                      int64_t X) {
      std::vector<double> r(H * std::max<int64_t>(len, 1) * X, 0.0);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t l = 0; l < len; ++l)
          for (int64_t x = 0; x < X; ++x)
            r[(h * std::max<int64_t>(len, 1) + l) * X + x] = t[((start + l) * H + h) * X + x];
      return r;
    };
    p.q = gather(q, cu_q[b], len_q[b], Hq, D);
    p.k = gather(k, cu_k[b], len_k[b], Hkv, D);
    p.v = gather(v, cu_k[b], len_k[b], Hkv, Dv);
    const reference::Gradients want =
        reference::attention_backward(p, gather(dout, cu_q[b], len_q[b], Hq, Dv));
    const auto check = [&](const char* name, const std::vector<float>& got, int64_t start,
                           int64_t len, int64_t H, int64_t X, const std::vector<double>& w,
                           const std::vector<double>& scale) {
      const std::vector<double> g = gather(got, start, len, H, X);
      for (size_t i = 0; i < g.size(); ++i)
        ASSERT_NEAR(g[i], w[i], 1e-5 * scale[i] + 1e-7) << name << " of sequence " << b;
    };
    if (len_q[b] > 0) check("dq", dq, cu_q[b], len_q[b], Hq, D, want.dq, want.dq_scale);
    check("dk", dk, cu_k[b], len_k[b], Hkv, D, want.dk, want.dk_scale);
    check("dv", dv, cu_k[b], len_k[b], Hkv, Dv, want.dv, want.dv_scale);
  }
}

}  // namespace
}  // namespace xattn::testing
