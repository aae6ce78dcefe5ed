// Edge cases of the numerics, of the sizes and of threading. Where there is a result, it is
// checked against the float64 oracle (src/reference), forward and backward, for f32, f16 and
// bf16, for both tile layouts (70 query rows: rows in the vector lanes; one decode row: the head
// dimension in the lanes) and for 1, 2 and 3 threads. docs/robustness.md lists what each test
// shows.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/validate.h"
#include "oracle_util.h"
#include "xattn/nn/kv_cache.h"
#include "xattn/nn/linear.h"
#include "xattn/nn/tensor.h"

// Sanitizers reserve terabytes of shadow memory and end the process when an allocation fails,
// so the address-space test cannot run under them.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define XATTN_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define XATTN_SANITIZED 1
#endif
#endif

namespace xattn::testing {
namespace {

using ::testing::HasSubstr;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr DType kDtypes[] = {DType::kF32, DType::kF16, DType::kBF16};

struct Shape {
  int64_t B = 1, Hq = 1, Hkv = 1, Lq = 1, Lk = 1, D = 8, Dv = 8;
};

// Inputs drawn from N(0, 1) and rounded to `dtype` (so the oracle sees what the kernel sees),
// default scale, out, lse and weights all asked for.
RandomCase make_case(const Shape& s, DType dtype, uint64_t seed) {
  RandomCase c;
  reference::Problem& p = c.ref;
  p.batch = s.B, p.heads_q = s.Hq, p.heads_kv = s.Hkv, p.q_len = s.Lq, p.kv_len = s.Lk;
  p.head_dim = s.D, p.value_dim = s.Dv;
  p.scale = 1.0 / std::sqrt(static_cast<double>(s.D));
  c.dtype = c.out_dtype = dtype;
  c.want_lse = c.want_weights = true;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  auto draw = [&](std::vector<double>& x, int64_t n) {
    x.resize(n);
    for (double& e : x) e = round_to(dtype, normal(rng));
  };
  draw(p.q, s.B * s.Hq * s.Lq * s.D);
  draw(p.k, s.B * s.Hkv * s.Lk * s.D);
  draw(p.v, s.B * s.Hkv * s.Lk * s.Dv);
  return c;
}

// An explicit scale, as the kernel sees it (a float).
void set_scale(RandomCase& c, double scale) {
  c.default_scale = false;
  c.ref.scale = static_cast<float>(scale);
}

// A float mask [B, 1, Lq, Lk] (broadcast over the heads), values already in the input dtype.
void set_float_mask(RandomCase& c, const std::vector<double>& values) {
  const reference::Problem& p = c.ref;
  c.mask_kind = RandomCase::MaskKind::kFloat;
  c.mask_shape = {p.batch, 1, p.q_len, p.kv_len};
  c.mask_values = values;
  c.ref.mask.clear();
  const int64_t per_batch = p.q_len * p.kv_len;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads_q; ++h)
      c.ref.mask.insert(c.ref.mask.end(), values.begin() + b * per_batch,
                        values.begin() + (b + 1) * per_batch);
}

// Every (dtype, query rows, threads): both layouts, 1-3 threads; outputs alternate between
// f32 and the input dtype, and the memory layouts (contiguous, [B,L,H,D], padded, rows reversed:
// negative strides) rotate.
struct Config {
  DType dtype;
  int64_t rows;
  int threads;
  DType out_dtype;
  Layout4 layout;
};
std::vector<Config> configs() {
  std::vector<Config> all;
  int n = 0;
  for (DType t : kDtypes)
    for (int64_t rows : {int64_t{1}, int64_t{70}})
      for (int threads : {1, 2, 3}) {
        all.push_back({t, rows, threads, n % 2 ? t : DType::kF32, static_cast<Layout4>(n % 4)});
        ++n;
      }
  return all;
}
std::string describe(const Config& c) {
  return std::string(dtype_name(c.dtype)) + " rows=" + std::to_string(c.rows) +
         " threads=" + std::to_string(c.threads) + " out=" + std::string(dtype_name(c.out_dtype)) +
         " layout=" + std::to_string(static_cast<int>(c.layout));
}
void apply(const Config& cfg, RandomCase& c) {
  c.threads = cfg.threads, c.out_dtype = cfg.out_dtype, c.layout = cfg.layout;
}

bool all_finite(const std::vector<double>& x) {
  for (double e : x)
    if (!std::isfinite(e)) return false;
  return true;
}

// The forward of `run` against the oracle of `oracle` (the same case, or its clean twin), within
// oracle_util's tolerance: 1e-5·max|V| for out, 1e-5 (+1e-5 relative) for lse, 1e-5 for the
// weights, plus a 16-bit output's rounding.
Outputs expect_forward(const RandomCase& oracle, const RandomCase& run, const std::string& what) {
  const Outputs got = run_xattn(run);
  const Check check = compare(oracle, got, reference::attention(oracle.ref));
  EXPECT_LE(check.worst_ratio, 1.0) << what << ": " << check.where;
  return got;
}

// attention_backward's documented accuracy (backward_test.cc): each gradient within
// (1e-5 + 2^-21·max|lse|) of the sum of its terms' magnitudes (the oracle's *_scale), plus a
// 16-bit gradient's rounding. The |lse| term is the recomputed probabilities' error: e^(z - lse)
// from an f32 score and an f32 lse. A gradient beyond the range of a 16-bit gradient dtype must
// be the infinity of its sign, as any rounding to that dtype gives (IEEE).
reference::Gradients expect_backward(const RandomCase& oracle, const RandomCase& run,
                                     const std::vector<double>& dout_oracle,
                                     const std::vector<double>& dout_run, const std::string& what) {
  const reference::Gradients want = reference::attention_backward(oracle.ref, dout_oracle);
  const reference::Gradients got = run_xattn_backward(run, dout_run);
  double max_lse = 0;
  for (double l : reference::attention(oracle.ref).lse)
    if (std::isfinite(l)) max_lse = std::max(max_lse, std::abs(l));
  const double rel_out = run.out_dtype == DType::kF16    ? 0x1p-11
                         : run.out_dtype == DType::kBF16 ? 0x1p-8
                                                         : 0;
  // The smallest magnitude that rounds to infinity in the gradients' dtype.
  const double overflow = run.out_dtype == DType::kF16    ? 65520.0
                          : run.out_dtype == DType::kBF16 ? 0x1.ffp127
                                                          : kInf;
  auto check = [&](const char* name, const std::vector<double>& g, const std::vector<double>& w,
                   const std::vector<double>& scale, double rel) {
    ASSERT_EQ(g.size(), w.size()) << what << ": " << name;
    for (size_t i = 0; i < w.size(); ++i) {
      const double tol = (1e-5 + 0x1p-21 * max_lse) * scale[i] + rel * std::abs(w[i]) + 1e-7;
      if (std::abs(w[i]) - tol >= overflow) {
        ASSERT_EQ(g[i], std::copysign(kInf, w[i])) << what << ": " << name << "[" << i << "]";
      } else if (!(std::isinf(g[i]) && std::abs(w[i]) + tol >= overflow)) {
        ASSERT_LE(std::abs(g[i] - w[i]), tol)
            << what << ": " << name << "[" << i << "] got " << g[i] << " want " << w[i];
      }
    }
  };
  check("dq", got.dq, want.dq, want.dq_scale, rel_out);
  check("dk", got.dk, want.dk, want.dk_scale, rel_out);
  check("dv", got.dv, want.dv, want.dv_scale, rel_out);
  if (run.mask_kind == RandomCase::MaskKind::kFloat)
    check("dmask", got.dmask, reduce_to_mask_shape(oracle, want.dmask),
          reduce_to_mask_shape(oracle, want.dmask_scale), 0.0);
  return got;
}

std::vector<double> random_dout(const RandomCase& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> dout(c.ref.batch * c.ref.heads_q * c.ref.q_len * c.ref.value_dim);
  for (double& x : dout) x = normal(rng);
  return dout;
}

void expect_both(const RandomCase& c, const std::string& what, uint64_t seed = 1) {
  expect_forward(c, c, what);
  const std::vector<double> dout = random_dout(c, seed);
  expect_backward(c, c, dout, dout, what);
}

// --- Scores far from zero ------------------------------------------------------------------

// Scores C + δ with |C| up to 1e6 and δ of order 1, all exact in f32 (q = [1, a], k = [C, b]
// with dyadic a, b): a large common offset must cancel exactly against the row maximum, so
// out, lse and, since the weights are normalised by the row's m and l rather than by its f32
// lse, the weights match the oracle as for small scores.
TEST(EdgeCases, LargeScoreOffsetsCancelExactly) {
  for (const Config& cfg : configs())
    for (double offset : {1e4, -1e4, 1e6}) {
      if (cfg.dtype == DType::kF16 && std::abs(offset) > 6e4) continue;  // beyond f16
      const Shape s{.B = 1, .Hq = 2, .Hkv = 1, .Lq = cfg.rows, .Lk = 150, .D = 2, .Dv = 3};
      RandomCase c = make_case(s, cfg.dtype, 11);
      apply(cfg, c);
      set_scale(c, 1.0);
      for (int64_t r = 0; r < s.Hq * s.Lq; ++r)
        c.ref.q[2 * r] = 1, c.ref.q[2 * r + 1] = 0.25 * (r % 8);
      for (int64_t j = 0; j < s.Lk; ++j)
        c.ref.k[2 * j] = round_to(cfg.dtype, offset), c.ref.k[2 * j + 1] = 0.5 * ((7 * j) % 11) - 2;
      c.ref.causal = cfg.threads == 2;  // boundary tiles too
      c.ref.bottom_right = true;
      expect_both(c, describe(cfg) + " offset " + std::to_string(offset));
    }
}

// A huge scale (or huge q·k) makes every row one-hot; nothing overflows on the way (e^(s - m)
// <= 1, lse = m + log l), the gradients stay finite (a recomputed probability is capped at 1,
// where the f32 rounding of scores near 1e30 would otherwise give e^(1e23)), and both are
// within their tolerances.
TEST(EdgeCases, HugeScoresStayFiniteAndMatchTheOracle) {
  for (const Config& cfg : configs())
    for (double scale : {1e4, 1e30}) {
      RandomCase c = make_case({.B = 1, .Hq = 2, .Hkv = 1, .Lq = cfg.rows, .Lk = 97, .D = 16,
                                .Dv = 16},
                               cfg.dtype, 12);
      apply(cfg, c);
      set_scale(c, scale);
      const std::string what = describe(cfg) + " scale " + std::to_string(scale);
      const Outputs got = expect_forward(c, c, what);
      EXPECT_TRUE(all_finite(got.out) && all_finite(got.lse) && all_finite(got.weights)) << what;
      // Gradients in f32: the terms are of order scale, and an f16 gradient holding their
      // rounding would overflow (F16GradientsThatOverflowBecomeInfinity).
      c.out_dtype = DType::kF32;
      const std::vector<double> dout = random_dout(c, 2);
      const reference::Gradients g = expect_backward(c, c, dout, dout, what);
      EXPECT_TRUE(all_finite(g.dq) && all_finite(g.dk) && all_finite(g.dv)) << what;
    }
}

// Scores are f32: one beyond its range (|scale·q·k| > 3.4e38) is ±inf, and a +inf score makes
// its row NaN (e^(inf - inf)), as IEEE arithmetic says; the other rows are unaffected.
TEST(EdgeCases, ScoresBeyondTheFloatRangeFollowIeee) {
  for (int64_t Lq : {2, 40}) {  // head dim in the lanes; rows in the lanes
    std::vector<float> q(Lq, 1.0f), k = {2.0f, -2.0f, 0.5f}, v = {1, 2, 3}, out(Lq), lse(Lq);
    q[0] = 0.0f;  // row 0: every score is 0 (3e38·0), uniform weights
    AttentionParams params;
    params.scale = 3e38f;  // rows i > 0: scores 6e38 (+inf), -inf and 1.5e38
    attention(view(q.data(), {1, 1, Lq, 1}), view(k.data(), {1, 1, 3, 1}),
              view(v.data(), {1, 1, 3, 1}), params,
              {view(out.data(), {1, 1, Lq, 1}), view(lse.data(), {1, 1, Lq})});
    EXPECT_FLOAT_EQ(out[0], 2.0f);
    EXPECT_FLOAT_EQ(lse[0], std::log(3.0f));
    for (int64_t i = 1; i < Lq; ++i) EXPECT_TRUE(std::isnan(out[i]) && std::isnan(lse[i])) << i;
  }
}

// --- Masks of -inf --------------------------------------------------------------------------

// A float mask holding -inf, whole rows of it, finite values among -inf, and the very negative
// finite values frameworks use instead (-3e38, f16's -65504): fully masked rows give out 0,
// lse -inf, weights 0 and zero gradients (dmask included); the rest matches the oracle. With and
// without softcap, which applies before the mask.
TEST(EdgeCases, MinusInfinityMasks) {
  for (const Config& cfg : configs()) {
    const Shape s{.B = 2, .Hq = 2, .Hkv = 1, .Lq = cfg.rows, .Lk = 75, .D = 8, .Dv = 5};
    RandomCase c = make_case(s, cfg.dtype, 13);
    apply(cfg, c);
    const double very_negative = cfg.dtype == DType::kF16 ? -65504.0 : round_to(cfg.dtype, -3e38);
    // [B, 1, Lq, Lk]; mask row (b, i) is entirely -inf when (b·Lq + i) % 3 == 0.
    auto masked_row = [&](int64_t b, int64_t i) { return (b * s.Lq + i) % 3 == 0; };
    std::vector<double> mask(s.B * s.Lq * s.Lk);
    std::mt19937_64 rng(3);
    std::normal_distribution<double> normal;
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t i = 0; i < s.Lq; ++i)
        for (int64_t j = 0; j < s.Lk; ++j) {
          double& m = mask[(b * s.Lq + i) * s.Lk + j];
          if (masked_row(b, i)) m = -kInf;
          else if (j == 0) m = 0;  // every other row sees key 0, unbiased
          else if ((i + j) % 4 == 0) m = -kInf;
          else if ((i + j) % 4 == 1) m = very_negative;
          else m = round_to(cfg.dtype, normal(rng));
        }
    set_float_mask(c, mask);
    if (cfg.threads != 1) c.ref.softcap = 5.0;
    const std::string what = describe(cfg);
    const Outputs got = expect_forward(c, c, what);
    const int64_t rows = s.B * s.Hq * s.Lq;
    auto masked = [&](int64_t r) { return masked_row(r / (s.Hq * s.Lq), r % s.Lq); };
    for (int64_t r = 0; r < rows; ++r) {
      if (!masked(r)) continue;
      EXPECT_EQ(got.lse[r], -kInf) << what;
      for (int64_t e = 0; e < s.Dv; ++e) EXPECT_EQ(got.out[r * s.Dv + e], 0.0) << what;
      for (int64_t j = 0; j < s.Lk; ++j) EXPECT_EQ(got.weights[r * s.Lk + j], 0.0) << what;
    }
    const std::vector<double> dout = random_dout(c, 4);
    const reference::Gradients g = expect_backward(c, c, dout, dout, what);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t d = 0; d < s.D && masked(r); ++d) EXPECT_EQ(g.dq[r * s.D + d], 0.0) << what;
    for (int64_t j = 0; j < s.Lk; ++j) EXPECT_EQ(g.dmask[j], 0.0) << what;  // row (0, 0)
  }
}

// --- Non-finite values where nothing may read them ------------------------------------------

// NaN and Inf in every key and value that no query sees (beyond kv_lens, outside the causal
// window, masked by the bool or float mask) and in every query row that sees nothing (beyond
// q_lens, fully masked), and in dout for those rows, must not reach any output or gradient: 0·NaN
// is NaN, so masked entries are skipped, never multiplied by zero.
TEST(EdgeCases, NonFiniteValuesNobodySeesNeverReachTheResults) {
  for (const Config& cfg : configs()) {
    const Shape s{.B = 2, .Hq = 2, .Hkv = 1, .Lq = cfg.rows, .Lk = 140, .D = 8, .Dv = 5};
    RandomCase clean = make_case(s, cfg.dtype, 14);
    apply(cfg, clean);
    reference::Problem& p = clean.ref;
    p.kv_lens = {100, 140};
    if (s.Lq > 1) p.q_lens = {s.Lq, s.Lq - 3};
    p.causal = true, p.bottom_right = true;
    p.window_left = 30;
    std::vector<double> mask(s.B * s.Lq * s.Lk, 0.0);  // [B, 1, Lq, Lk]
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t i = 0; i < s.Lq; ++i) {
        double* row = mask.data() + (b * s.Lq + i) * s.Lk;
        row[95] = -kInf;  // key 95 masked for every row
        if (b == 1 && i == s.Lq / 2) std::fill(row, row + s.Lk, -kInf);  // a row that sees nothing
      }
    set_float_mask(clean, mask);
    if (cfg.threads == 2) {  // the same as a bool mask
      clean.mask_kind = RandomCase::MaskKind::kBool;
      for (double& m : clean.mask_values) m = m == 0 ? 1 : 0;
    }
    // Which keys and rows are seen: uniform weights (q = 0) are > 0 exactly where visible.
    reference::Problem zero_q = p;
    std::fill(zero_q.q.begin(), zero_q.q.end(), 0.0);
    const reference::Result seen = reference::attention(zero_q);
    RandomCase dirty = clean;
    std::vector<double> dout = random_dout(clean, 5), dirty_dout = dout;
    const double poison[] = {NAN, kInf, -kInf};
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t j = 0; j < s.Lk; ++j) {
        bool visible = false;
        for (int64_t r = 0; r < s.Hq * s.Lq; ++r)
          visible |= seen.weights[(b * s.Hq * s.Lq + r) * s.Lk + j] > 0;
        if (visible) continue;
        for (int64_t d = 0; d < s.D; ++d) dirty.ref.k[(b * s.Lk + j) * s.D + d] = poison[j % 3];
        for (int64_t e = 0; e < s.Dv; ++e)
          dirty.ref.v[(b * s.Lk + j) * s.Dv + e] = poison[(j + 1) % 3];
      }
    for (int64_t r = 0; r < s.B * s.Hq * s.Lq; ++r) {
      if (seen.lse[r] != -kInf) continue;
      for (int64_t d = 0; d < s.D; ++d) dirty.ref.q[r * s.D + d] = poison[r % 3];
      for (int64_t e = 0; e < s.Dv; ++e) dirty_dout[r * s.Dv + e] = NAN;
    }
    const std::string what = describe(cfg);
    const Outputs got = expect_forward(clean, dirty, what);
    EXPECT_TRUE(all_finite(got.out) && all_finite(got.weights)) << what;
    const reference::Gradients g = expect_backward(clean, dirty, dout, dirty_dout, what);
    EXPECT_TRUE(all_finite(g.dq) && all_finite(g.dk) && all_finite(g.dv)) << what;
  }
}

// --- f16 at the top of its range ------------------------------------------------------------

// Values near 65504 (f16's largest) in V, or in Q and K with a small scale: f32 accumulation
// never overflows, and an f16 output cannot either (out is a convex combination of V rows).
TEST(EdgeCases, F16InputsNearTheirLargestValue) {
  for (const Config& cfg : configs()) {
    if (cfg.dtype != DType::kF16) continue;
    const Shape s{.B = 1, .Hq = 2, .Hkv = 2, .Lq = cfg.rows, .Lk = 45, .D = 8, .Dv = 8};
    RandomCase big_v = make_case(s, DType::kF16, 15);
    apply(cfg, big_v);
    for (double& x : big_v.ref.v)  // ±[60000, 65504]
      x = round_to(DType::kF16, (x < 0 ? -1 : 1) * (60000 + 5504 * std::tanh(std::abs(x))));
    expect_both(big_v, describe(cfg) + " V near 65504");
    RandomCase big_qk = make_case(s, DType::kF16, 16);
    apply(cfg, big_qk);
    for (auto* x : {&big_qk.ref.q, &big_qk.ref.k})
      for (double& e : *x)
        e = round_to(DType::kF16, e < 0 ? -65504 + 100 * std::abs(e) : 65504 - 100 * e);
    set_scale(big_qk, 1e-9);  // scores of a few units
    expect_both(big_qk, describe(cfg) + " Q, K near 65504");
  }
}

// A gradient too large for f16 (64 rows attending to one key: dv = Σ dout = 3.84e6) becomes +inf
// in an f16 dv, as any conversion to f16 rounds (IEEE; torch's .half() does the same); f32
// gradients hold it.
TEST(EdgeCases, F16GradientsThatOverflowBecomeInfinity) {
  const int64_t Lq = 64, D = 4;
  RandomCase c = make_case({.Lq = Lq, .Lk = 1, .D = D, .Dv = D}, DType::kF16, 17);
  const std::vector<double> dout(Lq * D, 60000.0);
  c.out_dtype = DType::kF32;
  const reference::Gradients exact = expect_backward(c, c, dout, dout, "f32 gradients");
  for (double x : exact.dv) EXPECT_NEAR(x, 64 * 60000.0, 1.0);
  c.out_dtype = DType::kF16;
  const reference::Gradients g = run_xattn_backward(c, dout);
  for (double x : g.dv) EXPECT_EQ(x, kInf);
  EXPECT_TRUE(all_finite(g.dq) && all_finite(g.dk));  // (one key: nearly 0)
}

// --- The smallest shapes and degenerate options ---------------------------------------------

// Lq = Lk = 1 (out = v, weights 1, dq = dk = 0, dv = dout); D = Dv = 1; scale 0 (uniform weights
// over the visible keys: out is their mean); softcap together with -inf masks and causal.
TEST(EdgeCases, TinyShapesAndDegenerateOptions) {
  for (const Config& cfg : configs()) {
    const std::string what = describe(cfg);
    RandomCase one = make_case({.B = 2, .Hq = 3, .Hkv = 1, .Lq = 1, .Lk = 1, .D = 8, .Dv = 6},
                               cfg.dtype, 18);
    apply(cfg, one);
    expect_both(one, what + " Lq = Lk = 1");
    RandomCase d1 = make_case(
        {.B = 1, .Hq = 2, .Hkv = 2, .Lq = cfg.rows, .Lk = 33, .D = 1, .Dv = 1}, cfg.dtype, 19);
    apply(cfg, d1);
    d1.ref.causal = true;
    expect_both(d1, what + " D = Dv = 1");
    RandomCase uniform = make_case({.B = 2, .Hq = 1, .Hkv = 1, .Lq = cfg.rows, .Lk = 140, .D = 8,
                                    .Dv = 8},
                                   cfg.dtype, 20);
    apply(cfg, uniform);
    set_scale(uniform, 0.0);
    uniform.ref.kv_lens = {140, 37};
    uniform.ref.causal = cfg.threads != 1, uniform.ref.bottom_right = true;
    expect_both(uniform, what + " scale 0");
    RandomCase capped = make_case({.B = 1, .Hq = 2, .Hkv = 1, .Lq = cfg.rows, .Lk = 80, .D = 8,
                                   .Dv = 8},
                                  cfg.dtype, 21);
    apply(cfg, capped);
    set_scale(capped, 3.0);  // scores far past the cap
    capped.ref.softcap = 2.0;
    capped.ref.causal = true, capped.ref.bottom_right = true;
    std::vector<double> mask(cfg.rows * 80, 0.0);
    for (size_t i = 0; i < mask.size(); ++i)
      if (i % 5 == 2 || (cfg.rows > 1 && i / 80 == 0)) mask[i] = -kInf;  // row 0 sees nothing
    set_float_mask(capped, mask);
    expect_both(capped, what + " softcap with -inf masks");
  }
}

// A window wider than any distance (INT64_MAX included) is unbounded; p - left and p + right + 1
// must not overflow.
TEST(EdgeCases, WindowsOfAnyWidth) {
  for (const Config& cfg : configs()) {
    RandomCase c = make_case({.B = 1, .Hq = 1, .Hkv = 1, .Lq = cfg.rows, .Lk = 9, .D = 8, .Dv = 8},
                             cfg.dtype, 22);
    apply(cfg, c);
    c.ref.bottom_right = true;  // diagonals below 0 for the first rows when Lq > Lk
    const Outputs unbounded = run_xattn(c);
    for (int64_t w : {int64_t{1} << 40, std::numeric_limits<int64_t>::max()}) {
      RandomCase wide = c;
      wide.ref.window_left = wide.ref.window_right = w;
      const Outputs got = run_xattn(wide);
      EXPECT_EQ(got.out, unbounded.out) << describe(cfg) << " window " << w;
      EXPECT_EQ(got.weights, unbounded.weights) << describe(cfg) << " window " << w;
    }
  }
}

// --- Empty problems ---------------------------------------------------------------------------

// A buffer of n floats filled with 42 (at least one element, so that data is never null).
std::vector<float> filled(int64_t n) { return std::vector<float>(std::max<int64_t>(n, 1), 42.0f); }

bool all_equal(const std::vector<float>& x, int64_t n, float value) {
  for (int64_t i = 0; i < n; ++i)
    if (!(x[i] == value)) return false;
  return true;
}

// Zero counts (B, Hq and Hkv, Hq alone, Lq, Lk) are valid, empty problems with the natural
// result: with no keys every row sees none (out 0, lse -inf; the weights have no column), with no
// query rows the keys get zero gradients, and nothing is written outside the (empty) outputs.
// (A zero feature width D or Dv is an error: bad_input_test.cc.)
TEST(EdgeCases, EmptyProblems) {
  const Shape shapes[] = {{.B = 0, .Hq = 2, .Hkv = 1, .Lq = 3, .Lk = 4},
                          {.B = 2, .Hq = 0, .Hkv = 0, .Lq = 3, .Lk = 4},
                          {.B = 2, .Hq = 0, .Hkv = 2, .Lq = 3, .Lk = 4},
                          {.B = 2, .Hq = 2, .Hkv = 1, .Lq = 0, .Lk = 4},
                          {.B = 2, .Hq = 2, .Hkv = 1, .Lq = 3, .Lk = 0}};
  for (const Shape& s : shapes)
    for (int threads : {1, 2}) {
      const int64_t nq = s.B * s.Hq * s.Lq, nk = s.B * s.Hkv * s.Lk;
      std::vector<float> q = filled(nq * s.D), k = filled(nk * s.D), v = filled(nk * s.Dv);
      std::vector<float> out = filled(nq * s.Dv), lse = filled(nq), w = filled(nq * s.Lk);
      std::vector<float> mask(1, 0.0f), dmask = filled(1);
      AttentionParams params;
      params.num_threads = threads;
      params.mask = view(mask.data(), {1, 1, 1, 1});  // broadcasts to [B, Hq, Lq, Lk]
      const TensorView qv = view(q.data(), {s.B, s.Hq, s.Lq, s.D});
      const TensorView kv = view(k.data(), {s.B, s.Hkv, s.Lk, s.D});
      const TensorView vv = view(v.data(), {s.B, s.Hkv, s.Lk, s.Dv});
      attention(qv, kv, vv, params,
                {view(out.data(), {s.B, s.Hq, s.Lq, s.Dv}), view(lse.data(), {s.B, s.Hq, s.Lq}),
                 view(w.data(), {s.B, s.Hq, s.Lq, s.Lk})});
      const bool no_keys = s.Lk == 0;
      EXPECT_TRUE(all_equal(out, nq * s.Dv, no_keys ? 0.0f : 42.0f));
      EXPECT_TRUE(all_equal(lse, nq, no_keys ? -INFINITY : 42.0f));
      if (nq * s.Dv == 0) {
        EXPECT_EQ(out[0], 42.0f);  // nothing written
      }
      std::vector<float> dout(std::max<int64_t>(nq * s.Dv, 1), 1.0f);
      std::vector<float> dq = filled(nq * s.D), dk = filled(nk * s.D), dv = filled(nk * s.Dv);
      attention_backward(qv, kv, vv, view(out.data(), {s.B, s.Hq, s.Lq, s.Dv}),
                         view(lse.data(), {s.B, s.Hq, s.Lq}),
                         view(dout.data(), {s.B, s.Hq, s.Lq, s.Dv}), params,
                         {view(dq.data(), {s.B, s.Hq, s.Lq, s.D}),
                          view(dk.data(), {s.B, s.Hkv, s.Lk, s.D}),
                          view(dv.data(), {s.B, s.Hkv, s.Lk, s.Dv}),
                          view(dmask.data(), {1, 1, 1, 1})});
      EXPECT_TRUE(all_equal(dq, nq * s.D, 0.0f));  // no key, or no row to take it
      EXPECT_TRUE(all_equal(dk, nk * s.D, 0.0f));
      EXPECT_TRUE(all_equal(dv, nk * s.Dv, 0.0f));
      EXPECT_EQ(dmask[0], 0.0f);  // a sum over no scores
    }
}

TEST(EdgeCases, EmptyPackedBatches) {
  const int64_t H = 2, D = 4;
  std::vector<float> x = filled(4 * H * D), out = filled(3 * H * D), lse = filled(3 * H);
  const std::vector<float> dout(3 * H * D, 1.0f);
  std::vector<float> w = filled(1), dq = filled(3 * H * D), dk = filled(4 * H * D);
  struct Case {
    std::vector<int64_t> cu_q, cu_k;
  };
  // No sequence at all (B = 0); queries without keys; keys without queries.
  for (const Case& c : {Case{{0}, {0}}, Case{{0, 3}, {0, 0}}, Case{{0, 0}, {0, 4}}}) {
    const int64_t Tq = c.cu_q.back(), Tk = c.cu_k.back();  // (and max_k = Tk here)
    std::fill(out.begin(), out.end(), 42.0f);
    attention_varlen(view(x.data(), {Tq, H, D}), view(x.data(), {Tk, H, D}),
                     view(x.data(), {Tk, H, D}), c.cu_q, c.cu_k, {},
                     {view(out.data(), {Tq, H, D}), view(lse.data(), {H, Tq}),
                      view(w.data(), {H, Tq, Tk})});
    EXPECT_TRUE(all_equal(out, Tq * H * D, 0.0f)) << Tq << " " << Tk;
    EXPECT_TRUE(all_equal(lse, Tq * H, -INFINITY));
    std::vector<float> dv = filled(4 * H * D);
    attention_varlen_backward(view(x.data(), {Tq, H, D}), view(x.data(), {Tk, H, D}),
                              view(x.data(), {Tk, H, D}), c.cu_q, c.cu_k,
                              view(out.data(), {Tq, H, D}), view(lse.data(), {H, Tq}),
                              view(dout.data(), {Tq, H, D}), {},
                              {view(dq.data(), {Tq, H, D}), view(dk.data(), {Tk, H, D}),
                               view(dv.data(), {Tk, H, D})});
    EXPECT_TRUE(all_equal(dq, Tq * H * D, 0.0f));
    EXPECT_TRUE(all_equal(dk, Tk * H * D, 0.0f));
    EXPECT_TRUE(all_equal(dv, Tk * H * D, 0.0f));
  }
}

TEST(EdgeCases, EmptyMergeAndNullDataInEmptyViews) {
  std::vector<float> a = filled(1), la = filled(1), out = filled(1), lse = filled(1);
  merge(view(a.data(), {0, 3, 4}), view(la.data(), {0, 3}), view(a.data(), {0, 3, 4}),
        view(la.data(), {0, 3}), view(out.data(), {0, 3, 4}), view(lse.data(), {0, 3}));
  EXPECT_EQ(out[0], 42.0f);
  // Null data means "absent" even for an empty view: q, k, v and out must point somewhere.
  try {
    attention(view(static_cast<const float*>(nullptr), {0, 1, 1, 4}), view(a.data(), {0, 1, 1, 4}),
              view(a.data(), {0, 1, 1, 4}), {}, {view(out.data(), {0, 1, 1, 4})});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("q: data is null"));
  }
}

// --- Sizes beyond what index arithmetic or memory can hold ---------------------------------

void expect_error(const std::function<void()>& call, const char* fragment) {
  try {
    call();
    ADD_FAILURE() << "no error, expected one with \"" << fragment << "\"";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(fragment));
  }
}

// Views whose sizes multiply past 2^62 elements (possible with zero strides, which read one
// element many times) or whose strides reach past it are refused before any loop or buffer
// follows them.
TEST(SizeLimits, ShapesWhoseIndexArithmeticWouldOverflow) {
  std::vector<float> x(64, 1.0f), out(64, 42.0f);
  const int64_t big = int64_t{1} << 40;
  const TensorView one = view(x.data(), {1, 1, 1, 4});
  const MutableTensorView out1 = view(out.data(), {1, 1, 1, 4});
  const TensorView broadcast{x.data(), DType::kF32,
                             Layout::strided({big, big, 1, 4}, {0, 0, 0, 1})};
  expect_error([&] { attention(broadcast, one, one, {}, {out1}); },
               "q: sizes and strides overflow 64-bit index arithmetic");
  const TensorView long_keys{x.data(), DType::kF32,
                             Layout::strided({1, 1, int64_t{1} << 62, 4}, {0, 0, 0, 1})};
  expect_error([&] { attention(one, long_keys, long_keys, {}, {out1}); },
               "k: sizes and strides overflow");
  const TensorView far{x.data(), DType::kF32,
                       Layout::strided({1, 1, 2, 4}, {0, 0, int64_t{1} << 61, 1})};
  expect_error([&] { attention(far, one, one, {}, {view(out.data(), {1, 1, 2, 4})}); },
               "q: sizes and strides overflow");
  const TensorView backwards{x.data(), DType::kF32,
                             Layout::strided({1, 1, 4, 2}, {0, 0, -(int64_t{1} << 61), 1})};
  expect_error([&] { attention(backwards, one, one, {}, {view(out.data(), {1, 1, 4, 2})}); },
               "q: sizes and strides overflow");
  AttentionParams params;
  params.mask = {x.data(), DType::kF32, Layout::strided({big, big, 1, 1}, {0, 0, 0, 0})};
  expect_error([&] { attention(one, one, one, params, {out1}); }, "mask: sizes and strides");
  for (float e : out) ASSERT_EQ(e, 42.0f);
}

// A view built by hand may claim any rank; only 0 to 4 sizes fit in it, and nothing reads past
// them, messages included.
TEST(SizeLimits, RanksBeyondFourAreRefused) {
  std::vector<float> x(16, 1.0f), out(16, 42.0f), lse(4, 42.0f);
  TensorView bad = view(x.data(), {1, 1, 2, 4});
  bad.layout.rank = 7;
  const TensorView good = view(x.data(), {1, 1, 2, 4});
  expect_error([&] { attention(bad, good, good, {}, {view(out.data(), {1, 1, 2, 4})}); },
               "q: expected shape [B, Hq, Lq, D] of rank 4, got shape of rank 7");
  bad.layout.rank = -1;
  expect_error([&] { attention(good, good, bad, {}, {view(out.data(), {1, 1, 2, 4})}); },
               "v: expected shape [B, Hkv, Lk, Dv] of rank 4, got shape of rank -1");
  MutableTensorView bad_lse = view(lse.data(), {2, 2});
  bad_lse.layout.rank = 9;
  expect_error([&] {
    merge(view(x.data(), {2, 2, 4}), view(x.data(), {2, 2}), view(x.data(), {2, 2, 4}),
          view(x.data(), {2, 2}), view(out.data(), {2, 2, 4}), bad_lse);
  }, "lse: expected rank 2 (out_a's shape without its last dim), got rank 9");
  for (float e : out) ASSERT_EQ(e, 42.0f);
}

// Requests whose working memory (scratch, per-row statistics, per-sequence bookkeeping, the
// copies of a broadcast mask's gradient) or results (layer tensors, caches) could never fit in
// the machine's memory are refused as bad input before anything is allocated or written.
TEST(SizeLimits, RequestsBeyondMemoryAreRefusedBeforeAllocating) {
  // Inputs below the outputs in one buffer: the outputs' (claimed) spans, which run upwards,
  // then never overlap an input's.
  std::vector<float> mem(128, 1.0f);
  float* x = mem.data();
  float* out = x + 64;
  std::fill(out, out + 64, 42.0f);
  const TensorView one = view(x, {1, 1, 1, 1});
  const MutableTensorView out1 = view(out, {1, 1, 1, 1});
  // A head dimension of 2^40 (q and k broadcast along it): scratch rows of 2^40 floats.
  const int64_t wide = int64_t{1} << 40;
  const TensorView qk{x, DType::kF32, Layout::strided({1, 1, 1, wide}, {0, 0, 0, 0})};
  expect_error([&] { attention(qk, qk, one, {}, {out1}); }, "working memory: needs");
  // 2^45 sequences (q, k, v broadcast over them): bookkeeping per sequence. The output claims
  // memory it does not have, which is never touched.
  const int64_t many = int64_t{1} << 45;
  const TensorView seqs{x, DType::kF32, Layout::strided({many, 1, 1, 1}, {0, 0, 0, 0})};
  expect_error([&] { attention(seqs, seqs, seqs, {}, {view(out, {many, 1, 1, 1})}); },
               "working memory: needs");
  for (int i = 0; i < 64; ++i) ASSERT_EQ(out[i], 42.0f);
  // The gradient of a mask broadcast over the query rows is summed in one copy per thread:
  // 4096 copies of more than 1/16384 of the machine's memory each.
  {
    const int64_t cols = core::physical_memory_bytes() / (4 * core::kMaxThreads) + 1;
    std::vector<float> grads(3 * cols, 42.0f), small(8, 1.0f);
    AttentionParams params;
    params.num_threads = core::kMaxThreads;
    params.mask = {x, DType::kF32, Layout::strided({1, cols}, {0, 0})};
    const TensorView keys{x, DType::kF32, Layout::strided({1, 1, cols, 1}, {0, 0, 0, 0})};
    const TensorView rows2 = view(x, {1, 1, 2, 1});
    expect_error([&] {
      attention_backward(rows2, keys, keys, view(small.data(), {1, 1, 2, 1}),
                         view(small.data() + 2, {1, 1, 2}), rows2, params,
                         {view(small.data() + 4, {1, 1, 2, 1}), view(grads.data(), {1, 1, cols, 1}),
                          view(grads.data() + cols, {1, 1, cols, 1}),
                          view(grads.data() + 2 * cols, {1, cols})});
    }, "working memory: needs");
    for (float e : grads) ASSERT_EQ(e, 42.0f);
  }
  // Layers: a tensor, a layer's weights, a cache, an input gathered into rows.
  expect_error([] { nn::Tensor({int64_t{1} << 25, int64_t{1} << 25}); }, "Tensor: needs");
  expect_error([] { nn::Linear(int64_t{1} << 23, int64_t{1} << 23); }, "Tensor: needs");
  expect_error([] { nn::KVCache(1, int64_t{1} << 12, int64_t{1} << 12, int64_t{1} << 24); },
               "KVCache: needs");
  const nn::Linear small(4, 2);
  const TensorView rows{x, DType::kF16, Layout::strided({int64_t{1} << 50, 4}, {0, 1})};
  expect_error([&] { small(rows); }, "x: needs");
}

// More threads than any machine has: OpenMP would try to start them all, and its failure to
// start one ends the process (a segfault under an address-space limit).
TEST(SizeLimits, ThreadCountsBeyondAnyMachineAreRefused) {
  std::vector<float> x(4, 1.0f), out(4, 42.0f);
  AttentionParams params;
  params.num_threads = core::kMaxThreads + 1;
  expect_error([&] {
    attention(view(x.data(), {1, 1, 1, 4}), view(x.data(), {1, 1, 1, 4}),
              view(x.data(), {1, 1, 1, 4}), params, {view(out.data(), {1, 1, 1, 4})});
  }, "num_threads: must be in [0, 4096]");
  for (float e : out) ASSERT_EQ(e, 42.0f);
}

// BLAS takes 32-bit sizes: a layer's GEMM over 2^31 rows is refused, not truncated.
TEST(SizeLimits, LayerRowsBeyondBlasSizesAreRefused) {
  const nn::Linear layer(4, 2);
  std::vector<float> x(8, 1.0f), y(4, 42.0f);
  const int64_t rows = int64_t{1} << 31;
  expect_error([&] { layer.forward({x.data(), rows, 4, 0}, {y.data(), rows, 2, 2}); },
               "must be at most 2^31 - 1");
  for (float e : y) ASSERT_EQ(e, 42.0f);
}

// A softcap so small that 1/softcap overflows f32 would turn a zero score into 0·inf = NaN.
TEST(EdgeCases, SoftcapTooSmallToInvertIsRefused) {
  std::vector<float> x(4, 1.0f), out(4, 42.0f);
  AttentionParams params;
  params.softcap = 1e-40f;
  expect_error([&] {
    attention(view(x.data(), {1, 1, 1, 4}), view(x.data(), {1, 1, 1, 4}),
              view(x.data(), {1, 1, 1, 4}), params, {view(out.data(), {1, 1, 1, 4})});
  }, "softcap: must be 0 (off) or at least");
  params.softcap = 3e-39f;  // just above 1/FLT_MAX: fine, every score is capped to ±softcap
  attention(view(x.data(), {1, 1, 1, 4}), view(x.data(), {1, 1, 1, 4}),
            view(x.data(), {1, 1, 1, 4}), params, {view(out.data(), {1, 1, 1, 4})});
  for (float e : out) EXPECT_EQ(e, 1.0f);
}

// An allocation that fails although the request fits the machine (here: an address-space limit
// set in a child process, the test binary run again with only the test below) is an xattn::Error
// too, never a crash; and a later call, whose thread's scratch arena saw the failure, works.
TEST(SizeLimits, AllocationFailureIsAnError) {
#ifdef XATTN_SANITIZED
  GTEST_SKIP() << "sanitizers abort on a failed allocation instead of throwing std::bad_alloc";
#endif
  char self[4096] = {};
  ASSERT_GT(readlink("/proc/self/exe", self, sizeof(self) - 1), 0);
  const std::string command = std::string("XATTN_EDGE_RLIMIT_CHILD=1 '") + self +
                              "' --gtest_filter=SizeLimitsChild.UnderAnAddressSpaceLimit 2>&1";
  FILE* child = popen(command.c_str(), "r");
  ASSERT_NE(child, nullptr);
  std::string output;
  char buf[512];
  while (fgets(buf, sizeof(buf), child)) output += buf;
  const int status = pclose(child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  EXPECT_THAT(output, HasSubstr("[  PASSED  ] 1 test")) << output;
  EXPECT_THAT(output, ::testing::Not(HasSubstr("SKIPPED"))) << output;
}

int64_t virtual_memory_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  int64_t kib = 0;
  while (status >> key)
    if (key == "VmSize:" && status >> kib) return kib * 1024;
  return 0;
}

TEST(SizeLimitsChild, UnderAnAddressSpaceLimit) {
  if (!std::getenv("XATTN_EDGE_RLIMIT_CHILD")) GTEST_SKIP() << "run by AllocationFailureIsAnError";
  // Every call runs on this thread alone: starting a thread needs address space too.
  AttentionParams params;
  params.num_threads = 1;
  std::vector<float> x(16, 1.0f), small_out(16);
  const TensorView one = view(x.data(), {1, 1, 1, 1});
  auto small_call = [&] {
    attention(view(x.data(), {1, 1, 2, 4}), view(x.data(), {1, 1, 2, 4}),
              view(x.data(), {1, 1, 2, 4}), params, {view(small_out.data(), {1, 1, 2, 4})});
  };
  small_call();
  // Outputs that exist before the limit; the call's own buffers (each row's m and l for the
  // weights, its work items) do not fit under it.
  const int64_t rows = int64_t{1} << 24;
  std::vector<float> out(rows), weights(rows);
  const TensorView q{x.data(), DType::kF32, Layout::strided({1, 1, rows, 1}, {0, 0, 0, 0})};
  const int64_t limit = virtual_memory_bytes() + (int64_t{96} << 20);
  ASSERT_GT(limit, int64_t{96} << 20);
  const rlimit r{static_cast<rlim_t>(limit), static_cast<rlim_t>(limit)};
  ASSERT_EQ(setrlimit(RLIMIT_AS, &r), 0);
  expect_error([&] {
    attention(q, one, one, params,
              {view(out.data(), {1, 1, rows, 1}), {}, view(weights.data(), {1, 1, rows, 1})});
  }, "attention: out of memory");
  // Scratch rows of 2^20 floats (q and k broadcast along D): the thread's arena fails to grow.
  const TensorView wide{x.data(), DType::kF32, Layout::strided({1, 1, 1, 1 << 20}, {0, 0, 0, 0})};
  expect_error([&] { attention(wide, wide, one, params, {view(small_out.data(), {1, 1, 1, 1})}); },
               "attention: out of memory");
  small_call();  // the arena recovers
  EXPECT_EQ(small_out[0], 1.0f);
  expect_error([] { nn::Tensor({int64_t{1} << 27}); }, "Tensor: out of memory");
  expect_error([] { nn::KVCache(1, 4, 1 << 16, 256); }, "KVCache: out of memory");
}

// --- Outputs that share memory -----------------------------------------------------------------

// Outputs are written while inputs are read, by several threads: an output that overlaps an input,
// another output or itself is refused, before anything is written. merge() reads each element
// before writing it, so there an output may be an input exactly (but not partly).
TEST(Overlap, OutputsThatShareMemoryAreRefused) {
  const int64_t L = 4, D = 4;
  std::vector<float> buf(4 * L * D + 8, 1.0f);
  float* q = buf.data();
  float* k = q + L * D;
  float* spare = k + L * D;
  const TensorView qv = view(q, {1, 1, L, D}), kv = view(k, {1, 1, L, D});
  auto forward = [&](const AttentionOutputs& o) { attention(qv, kv, kv, {}, o); };
  expect_error([&] { forward({view(q, {1, 1, L, D})}); }, "out: overlaps the input q");
  expect_error([&] { forward({view(k + 2, {1, 1, L, D})}); }, "out: overlaps the input k");
  expect_error([&] { forward({view(spare, {1, 1, L, D}), view(spare + 3, {1, 1, L})}); },
               "lse: overlaps the output out");
  expect_error([&] {
    forward({view(spare, {1, 1, L, D}), {}, view(spare + L * D - 1, {1, 1, L, L})});
  }, "weights: overlaps the output out");
  // Strides that step into each other (rows 1 element apart, rows 4 long).
  expect_error([&] {
    forward({{spare, DType::kF32, Layout::strided({1, 1, L, D}, {0, 0, 1, 1})}});
  }, "out: dim 3 has stride 1, which steps into elements");
  std::vector<float> mask(L * L, 0.0f);
  AttentionParams params;
  params.mask = view(mask.data(), {L, L});
  expect_error([&] {
    attention(qv, kv, kv, params, {view(spare, {1, 1, L, D}), {}, view(mask.data(), {1, 1, L, L})});
  }, "weights: overlaps the input mask");
  // Backward: gradients against the inputs and each other.
  std::vector<float> out(L * D), lse(L), dout(L * D, 1.0f), g(3 * L * D);
  attention(qv, kv, kv, {}, {view(out.data(), {1, 1, L, D}), view(lse.data(), {1, 1, L})});
  auto backward = [&](float* dq, float* dk, float* dv) {
    attention_backward(qv, kv, kv, view(out.data(), {1, 1, L, D}), view(lse.data(), {1, 1, L}),
                       view(dout.data(), {1, 1, L, D}), {},
                       {view(dq, {1, 1, L, D}), view(dk, {1, 1, L, D}), view(dv, {1, 1, L, D})});
  };
  expect_error([&] { backward(g.data(), g.data() + L * D, q); }, "dv: overlaps the input q");
  expect_error([&] { backward(g.data(), g.data() + 1, g.data() + 2 * L * D); },
               "dk: overlaps the output dq");
  expect_error([&] { backward(g.data(), g.data() + L * D, dout.data()); },
               "dv: overlaps the input dout");
  backward(g.data(), g.data() + L * D, g.data() + 2 * L * D);  // separate: fine
  // merge: out may be out_a (or out_b) itself, not a shifted view of it.
  std::vector<float> a(L * D, 1.0f), la(L, 0.0f), b(L * D, 3.0f), lb(L, 0.0f);
  merge(view(a.data(), {L, D}), view(la.data(), {L}), view(b.data(), {L, D}), view(lb.data(), {L}),
        view(a.data(), {L, D}), view(la.data(), {L}));
  EXPECT_FLOAT_EQ(a[0], 2.0f);
  EXPECT_FLOAT_EQ(la[0], std::log(2.0f));
  std::vector<float> big(L * D + 1);
  expect_error([&] {
    merge(view(big.data(), {L, D}), view(la.data(), {L}), view(b.data(), {L, D}),
          view(lb.data(), {L}), view(big.data() + 1, {L, D}), view(lse.data(), {L}));
  }, "out: overlaps out_a in memory without being it");
}

// --- Threads sharing inputs ---------------------------------------------------------------------

// Several std::threads call every entry point at once on the same read-only inputs, each with
// its own outputs and 1 or 2 OpenMP threads of its own: every result has the bits of the same
// call made alone.
TEST(Concurrency, ThreadsSharingInputsGetTheSequentialBits) {
  const int64_t B = 2, Hq = 4, Hkv = 2, Lq = 67, Lk = 131, D = 32;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  auto randn = [&](int64_t n) {
    std::vector<float> x(n);
    for (float& e : x) e = normal(rng);
    return x;
  };
  const std::vector<float> q = randn(B * Hq * Lq * D), k = randn(B * Hkv * Lk * D),
                           v = randn(B * Hkv * Lk * D), dout = randn(B * Hq * Lq * D),
                           mask = randn(Lq * Lk);
  const std::vector<int64_t> cu_q = {0, 60, 2 * Lq}, cu_k = {0, 100, 2 * Lk};
  // One call of each kind; returns everything it wrote.
  auto run = [&](int kind, int threads) {
    AttentionParams params;
    params.num_threads = threads;
    params.causal = true;
    params.mask = view(mask.data(), {Lq, Lk});
    std::vector<float> out(B * Hq * Lq * D), lse(B * Hq * Lq), w(B * Hq * Lq * Lk);
    const TensorView qv = view(q.data(), {B, Hq, Lq, D}), kv = view(k.data(), {B, Hkv, Lk, D}),
                     vv = view(v.data(), {B, Hkv, Lk, D});
    if (kind == 1) {  // packed: the two batches as one of 2·Lq rows and 2·Lk keys, no mask
      params.mask = {};
      attention_varlen(view(q.data(), {2 * Lq, Hq, D}), view(k.data(), {2 * Lk, Hkv, D}),
                       view(v.data(), {2 * Lk, Hkv, D}), cu_q, cu_k, params,
                       {view(out.data(), {2 * Lq, Hq, D}), view(lse.data(), {Hq, 2 * Lq})});
      return out;
    }
    attention(qv, kv, vv, params,
              {view(out.data(), {B, Hq, Lq, D}), view(lse.data(), {B, Hq, Lq}),
               view(w.data(), {B, Hq, Lq, Lk})});
    if (kind == 0) {
      out.insert(out.end(), w.begin(), w.end());
      return out;
    }
    std::vector<float> g(B * Hq * Lq * D + 2 * B * Hkv * Lk * D + Lq * Lk);
    float* dq = g.data();
    float* dk = dq + B * Hq * Lq * D;
    float* dv = dk + B * Hkv * Lk * D;
    attention_backward(qv, kv, vv, view(out.data(), {B, Hq, Lq, D}),
                       view(lse.data(), {B, Hq, Lq}), view(dout.data(), {B, Hq, Lq, D}), params,
                       {view(dq, {B, Hq, Lq, D}), view(dk, {B, Hkv, Lk, D}),
                        view(dv, {B, Hkv, Lk, D}), view(dv + B * Hkv * Lk * D, {Lq, Lk})});
    return g;
  };
  std::vector<std::vector<float>> expected;
  for (int kind = 0; kind < 3; ++kind)
    for (int threads : {1, 2}) expected.push_back(run(kind, threads));
  std::vector<int> mismatches(6, 0);
  std::vector<std::thread> workers;
  for (int t = 0; t < 6; ++t)
    workers.emplace_back([&, t] {
      for (int rep = 0; rep < 24; ++rep) {
        const int job = (t + rep) % 6;  // every thread runs every kind, 4 times
        if (run(job / 2, job % 2 + 1) != expected[job]) ++mismatches[t];
      }
    });
  for (std::thread& w : workers) w.join();
  for (int t = 0; t < 6; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

}  // namespace
}  // namespace xattn::testing
