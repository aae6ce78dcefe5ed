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
