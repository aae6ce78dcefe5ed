// The kernels' vector exp against the correctly rounded exp (computed in double).

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/forward.h"
#include "xattn/runtime.h"

namespace xattn {
namespace {

// Distance in units in the last place of `want` (a float).
double ulp_error(float got, double want) {
  const float w = static_cast<float>(want);
  const float ulp = std::nextafter(std::abs(w), std::numeric_limits<float>::infinity()) - std::abs(w);
  return std::abs(static_cast<double>(got) - want) / ulp;
}

TEST(VectorExp, AtMostTwoUlpOverTheNormalRangeOnEveryTarget) {
  std::vector<float> x;
  for (double v = -87.3; v <= 88.7; v += 0.00173) x.push_back(static_cast<float>(v));
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1.0f, -1.0f, 0.6931472f, -0.3465736f})
    x.push_back(v);
  std::vector<float> y(x.size());
  for (const std::string& target : available_simd_targets()) {
    force_simd_target(target);
    kernels::vector_exp(x.data(), y.data(), static_cast<int64_t>(x.size()));
    double worst = 0;
    float worst_x = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double want = std::exp(static_cast<double>(x[i]));
      if (want < std::numeric_limits<float>::min()) continue;
      const double e = ulp_error(y[i], want);
      if (e > worst) worst = e, worst_x = x[i];
    }
    EXPECT_LE(worst, 2.0) << target << " at x = " << worst_x;
  }
  force_simd_target("");
}

// The softmax's exp (x <= 0 only) builds 2^n its own way on targets without vscalefps; it must
// give the general exp's bits, including where results are subnormal or flushed.
TEST(VectorExp, NonPositiveFormMatchesTheGeneralBitForBitOnEveryTarget) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {0.0f, -0.0f, -1e-30f, -87.3365448f, -87.3365479f, -87.4f, -103.0f,
                          -200.0f, -inf, std::nanf("")};
  const size_t nan_at = x.size() - 1;
  for (double v = -90.0; v <= 0.0; v += 0.000913) x.push_back(static_cast<float>(v));
  std::vector<float> general(x.size()), non_positive(x.size());
  for (const std::string& target : available_simd_targets()) {
    force_simd_target(target);
    kernels::vector_exp(x.data(), general.data(), static_cast<int64_t>(x.size()));
    kernels::vector_exp(x.data(), non_positive.data(), static_cast<int64_t>(x.size()), true);
    int64_t differ = 0;
    float first = 0;
    for (size_t i = 0; i < x.size(); ++i)
      if (std::memcmp(&general[i], &non_positive[i], sizeof(float)) != 0 && differ++ == 0)
        first = x[i];
    EXPECT_EQ(differ, 0) << target << ", first at x = " << first;
    EXPECT_TRUE(std::isnan(non_positive[nan_at])) << target;
  }
  force_simd_target("");
}

TEST(VectorExp, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {-inf, inf, std::nanf(""), -200.0f, 200.0f, -88.0f};
  std::vector<float> y(x.size());
  kernels::vector_exp(x.data(), y.data(), static_cast<int64_t>(x.size()));
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], inf);
  EXPECT_TRUE(std::isnan(y[2]));  // softmax must not turn a NaN score into weight 0
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_EQ(y[4], inf);
  EXPECT_LT(y[5], std::numeric_limits<float>::min());  // below FLT_MIN: flushed
}

}  // namespace
}  // namespace xattn
