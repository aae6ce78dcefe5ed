// Randomised configurations against the float64 oracle, on every SIMD target this CPU runs.

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "oracle_util.h"

namespace xattn::testing {
namespace {

constexpr int kCases = 520;

class TargetScope {
 public:
  explicit TargetScope(const std::string& t) { force_simd_target(t); }
  ~TargetScope() { force_simd_target(""); }
};

// New Q, K and V values (and default scale) for a random case whose shape a test changed.
void refill(RandomCase& c, std::mt19937_64& rng) {
  reference::Problem& p = c.ref;
  if (c.default_scale) p.scale = 1.0 / std::sqrt(static_cast<double>(p.head_dim));
  std::normal_distribution<double> normal(0.0, 1.0);
  auto values = [&](int64_t n) {
    std::vector<double> x(n);
    for (double& v : x) v = round_to(c.dtype, normal(rng));
    return x;
  };
  p.q = values(p.batch * p.heads_q * p.q_len * p.head_dim);
  p.k = values(p.batch * p.heads_kv * p.kv_len * p.head_dim);
  p.v = values(p.batch * p.heads_kv * p.kv_len * p.value_dim);
}

TEST(AttentionProperty, RandomConfigurationsMatchOracleOnEveryTarget) {
  const std::vector<std::string> targets = available_simd_targets();
  ASSERT_FALSE(targets.empty());
  std::mt19937_64 rng(20261121);
  int failures = 0;
  for (int n = 0; n < kCases; ++n) {
    const RandomCase c = random_case(rng);
    const reference::Result want = reference::attention(c.ref);
    for (const std::string& target : targets) {
      TargetScope scope(target);
      ASSERT_EQ(simd_target(), target);
      const Check check = compare(c, run_xattn(c), want);
      if (check.worst_ratio > 1.0 && ++failures <= 10)
        ADD_FAILURE() << "case " << n << " on " << target << ": " << c.describe() << "\n  "
                      << check.where << " (error/tolerance = " << check.worst_ratio << ")";
    }
  }
  EXPECT_EQ(failures, 0);
}

// Key chunks (a head's items run together over chunks of keys) are the CPU's choice for long
// K/V; forced on, every case of the random suite runs them, on every target.
TEST(AttentionProperty, KeyChunksMatchOracleOnEveryTarget) {
  force_key_chunks("on");
  std::mt19937_64 rng(20261207);
  int failures = 0;
  for (int n = 0; n < kCases / 4; ++n) {
    const RandomCase c = random_case(rng);
    const reference::Result want = reference::attention(c.ref);
    for (const std::string& target : available_simd_targets()) {
      TargetScope scope(target);
      const Check check = compare(c, run_xattn(c), want);
      if (check.worst_ratio > 1.0 && ++failures <= 10)
        ADD_FAILURE() << "case " << n << " on " << target << " with key chunks: " << c.describe()
                      << "\n  " << check.where << " (error/tolerance = " << check.worst_ratio << ")";
    }
  }
  force_key_chunks("auto");
  EXPECT_EQ(failures, 0);
}

// Where a decoder step's K and V exceed the last-level cache (hundreds of MiB on some CPUs), they
// stream from memory: items of up to 8 rows take the decode layout however wide the vectors are,
// and those of several rows prefetch K and V a key tile ahead. Forced on, every random case runs
// that way, on every target, and must match the oracle. (Not bit for bit what it gives off: on
// targets of fewer than 16 lanes, items of 3 to 8 rows change layout, which sums in another
// order.)
TEST(AttentionProperty, KvStreamingMatchesOracleOnEveryTarget) {
  std::mt19937_64 rng(20261209);
  int failures = 0;
  for (int n = 0; n < kCases / 4; ++n) {
    const RandomCase c = random_case(rng);
    const reference::Result want = reference::attention(c.ref);
    for (const std::string& target : available_simd_targets()) {
      TargetScope scope(target);
      force_kv_prefetch("on");
      const Outputs with = run_xattn(c);
      force_kv_prefetch("auto");
      const Check check = compare(c, with, want);
      if (check.worst_ratio > 1.0 && ++failures <= 10)
        ADD_FAILURE() << "case " << n << " on " << target << " with K/V streaming: "
                      << c.describe() << "\n  " << check.where
                      << " (error/tolerance = " << check.worst_ratio << ")";
    }
  }
  EXPECT_EQ(failures, 0);
}

// Decoder steps of every group size up to 8 query heads per kv head (items of 1 to 8 rows, each
// row count its own layout instance, some with padding rows) over three key tiles, the last
// partial, in the streaming layout, on every target.
TEST(AttentionProperty, DecoderStepsOfEveryGroupSizeMatchOracle) {
  std::mt19937_64 rng(20261207);
  int failures = 0;
  for (int64_t group = 1; group <= 8; ++group) {
    for (const DType dtype : {DType::kF32, DType::kBF16}) {
      RandomCase c;
      c.dtype = c.out_dtype = dtype;
      reference::Problem& p = c.ref;
      p.batch = 1, p.heads_kv = 2, p.heads_q = 2 * group, p.q_len = 1, p.kv_len = 300;
      p.head_dim = 80, p.value_dim = 72;
      refill(c, rng);
      const reference::Result want = reference::attention(p);
      for (const std::string& target : available_simd_targets()) {
        TargetScope scope(target);
        force_kv_prefetch("on");
        const Check check = compare(c, run_xattn(c), want);
        force_kv_prefetch("auto");
        if (check.worst_ratio > 1.0 && ++failures <= 10)
          ADD_FAILURE() << c.describe() << " on " << target << ": " << check.where
                        << " (error/tolerance = " << check.worst_ratio << ")";
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

// Where K and V outgrow L2, the items of a kv head run together over chunks of keys (forced on
// here: chunks of one key tile). Every row meets the same tiles in the same order as in an item
// run alone, so one thread (runs of several items) and sixteen (an item each) give the same
// bits, and both match the oracle. Cases of the random suite, grown to several row blocks of a
// head and several key tiles.
TEST(AttentionProperty, ItemsRunTogetherMatchOracleAndGiveTheSameBits) {
  force_key_chunks("on");
  std::mt19937_64 rng(20261208);
  int failures = 0, cases = 0;
  while (cases < 16) {
    RandomCase c = random_case(rng);
    if (c.mask_kind != RandomCase::MaskKind::kNone) continue;  // the mask has the old shape
    reference::Problem& p = c.ref;
    p.q_len = 520 + 24 * cases, p.kv_len = 200 + 60 * (cases % 4);
    p.head_dim = std::min<int64_t>(p.head_dim, 24);
    p.value_dim = std::min<int64_t>(p.value_dim, 24);
    const int64_t size = p.batch * p.heads_q * p.q_len * p.kv_len * (p.head_dim + p.value_dim);
    if (size > 40'000'000) continue;  // keep the float64 oracle fast
    refill(c, rng);
    ++cases;
    c.threads = 1;
    const Outputs together = run_xattn(c);
    c.threads = 16;
    const Outputs alone = run_xattn(c);
    const Check check = compare(c, together, reference::attention(p));
    const bool same = together.out == alone.out && together.lse == alone.lse &&
                      together.weights == alone.weights;
    if ((check.worst_ratio > 1.0 || !same) && ++failures <= 10)
      ADD_FAILURE() << "case " << cases << ": " << c.describe() << "\n  "
                    << (same ? "" : "1 and 16 threads gave different bits; ") << check.where
                    << " (error/tolerance = " << check.worst_ratio << ")";
  }
  force_key_chunks("auto");
  EXPECT_EQ(failures, 0);
}

// The CPU's profile picks one of the two bf16 paths (AVX-512 BF16 dot products, or widening to
// f32); the other must be as right, since another CPU runs it.
TEST(AttentionProperty, BothBf16PathsMatchOracle) {
  const bool chosen = bf16_dot_products();
  force_bf16_dot_products(chosen ? "off" : "on");
  const bool other = bf16_dot_products();
  if (other == chosen) {
    force_bf16_dot_products("auto");
    GTEST_SKIP() << "no AVX-512 BF16 here: one bf16 path only";
  }
  std::mt19937_64 rng(20261206);
  int failures = 0, bf16_cases = 0;
  for (int n = 0; n < kCases; ++n) {
    const RandomCase c = random_case(rng);
    if (c.dtype != DType::kBF16) continue;
    ++bf16_cases;
    const Check check = compare(c, run_xattn(c), reference::attention(c.ref));
    if (check.worst_ratio > 1.0 && ++failures <= 10)
      ADD_FAILURE() << "case " << n << " with bf16 dot products " << (other ? "on" : "off") << ": "
                    << c.describe() << "\n  " << check.where
                    << " (error/tolerance = " << check.worst_ratio << ")";
  }
  force_bf16_dot_products("auto");
  EXPECT_GT(bf16_cases, kCases / 10);
  EXPECT_EQ(failures, 0);
}

}  // namespace
}  // namespace xattn::testing
