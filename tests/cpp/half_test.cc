// The scalar 16-bit conversions, against the compiler's own _Float16 and a float64 bfloat16
// rounding written from the definition.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "xattn/half.h"

namespace xattn {
namespace {

uint16_t compiler_f16(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

TEST(Half, FloatToF16MatchesTheCompilerEverywhere) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 2'000'000; ++i) {
    const float f = bits_to_float(bits(rng));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_f16(f), compiler_f16(f)) << f;
  }
  for (float f : {65504.0f, 65519.0f, 65520.0f, 6.1e-5f, 5.96e-8f, 2.98e-8f, 2.99e-8f, 0.0f, -0.0f})
    EXPECT_EQ(float_to_f16(f), compiler_f16(f)) << f;
}

TEST(Half, F16ToFloatIsExactForEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    _Float16 x;
    const uint16_t b = static_cast<uint16_t>(h);
    std::memcpy(&x, &b, 2);
    const float want = static_cast<float>(x);
    const float got = f16_to_float(b);
    if (std::isnan(want)) EXPECT_TRUE(std::isnan(got));
    else ASSERT_EQ(float_to_bits(got), float_to_bits(want)) << h;
  }
}

TEST(Half, BFloat16RoundsToNearestEven) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 1'000'000; ++i) {
    const float f = bits_to_float(bits(rng));
    if (!std::isfinite(f) || std::abs(f) < std::numeric_limits<float>::min()) continue;
    const uint16_t b = float_to_bf16(f);
    // The two bfloat16 neighbours of f, in double (the upper one may be 2^128, which rounds to
    // inf); the result must be the nearer one, ties to the even mantissa.
    const double lo = bits_to_float(float_to_bits(f) & 0xffff0000u);
    const double hi = lo + std::copysign(std::ldexp(1.0, std::ilogb(lo) - 7), lo);
    const double dl = std::abs(f - lo), dh = std::abs(hi - f);
    const bool lo_even = ((float_to_bits(static_cast<float>(lo)) >> 16) & 1) == 0;
    double want = dl < dh ? lo : dh < dl ? hi : (lo_even ? lo : hi);
    if (std::abs(want) >= 0x1p128) want = std::copysign(INFINITY, want);
    ASSERT_EQ(static_cast<double>(bf16_to_float(b)), want) << f;
  }
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
}

}  // namespace
}  // namespace xattn
