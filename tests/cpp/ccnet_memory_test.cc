// Peak memory of CrissCrossAttention at [1, 64, 128, 128]: a small multiple of the feature map
// (4 MiB). A step holds the result (updated in place), q, k and v channels last (1.25 maps), the
// attention's output and its column partial (1 map each) and small per-pixel statistics: about
// 4.5 maps, which is what it measures with one OpenBLAS thread (4.6); with two, the second
// thread's packing buffers add about one more (5.7 measured). For scale: the official
// formulation's energies alone, [B, H, W, H + W], are 4 maps, and a dense (H·W) × (H·W) mask
// would be 256. Its own process, so the peak RSS is this call's alone.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "peak_rss.h"
#include "xattn/models/ccnet.h"

namespace xattn::models {
namespace {

TEST(Memory, CrissCrossAttentionIsASmallMultipleOfTheMap) {
#ifdef __SANITIZE_ADDRESS__
  GTEST_SKIP() << "peak memory is not meaningful under AddressSanitizer";
#endif
  const int64_t C = 64, H = 128, W = 128;
  const CrissCrossAttention module({C, /*recurrence=*/2});
  Tensor x({1, C, H, W});
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = normal(rng);

  const double map_mb = double(C * H * W) * 4 / (1 << 20);
  const double before = testing::peak_rss_mb();
  const Tensor y = module.forward(x.view());
  const double grown = testing::peak_rss_mb() - before;
  std::printf("CrissCrossAttention at [1, %lld, %lld, %lld]: peak RSS grew %.1f MB = %.2f maps\n",
              static_cast<long long>(C), static_cast<long long>(H), static_cast<long long>(W),
              grown, grown / map_mb);
  EXPECT_LT(grown, 6.5 * map_mb);
  for (int64_t i = 0; i < y.numel(); i += 997) ASSERT_TRUE(std::isfinite(y.data()[i]));
}

}  // namespace
}  // namespace xattn::models
