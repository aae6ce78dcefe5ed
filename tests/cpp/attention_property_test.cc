// Randomised configurations against the float64 oracle, on every SIMD target this CPU runs.

#include <gtest/gtest.h>

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

// Tall query tiles (twice the rows per pass over K and V) are the CPU's choice for long K/V;
// forced on, every case of the random suite runs them, on every target.
TEST(AttentionProperty, TallQueryTilesMatchOracleOnEveryTarget) {
  force_tall_query_tiles("on");
  std::mt19937_64 rng(20261207);
  int failures = 0;
  for (int n = 0; n < kCases / 4; ++n) {
    const RandomCase c = random_case(rng);
    const reference::Result want = reference::attention(c.ref);
    for (const std::string& target : available_simd_targets()) {
      TargetScope scope(target);
      const Check check = compare(c, run_xattn(c), want);
      if (check.worst_ratio > 1.0 && ++failures <= 10)
        ADD_FAILURE() << "case " << n << " on " << target << " with tall tiles: " << c.describe()
                      << "\n  " << check.where << " (error/tolerance = " << check.worst_ratio << ")";
    }
  }
  force_tall_query_tiles("auto");
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
