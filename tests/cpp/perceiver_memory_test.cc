// Peak memory of Perceiver IO's encode over 2^17 inputs: linear in the input length. Beyond the
// input, it must hold the input's LayerNorm and its keys and values, M·(input_dim + 2·latent_dim)
// floats (288 MiB here); one latent-by-input score matrix would add 128 MiB more. Its own
// process, so the peak RSS is this call's alone.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "peak_rss.h"
#include "xattn/models/perceiver_io.h"

namespace xattn::models {
namespace {

TEST(Memory, PerceiverEncodeIsLinearInTheInputLength) {
#ifdef __SANITIZE_ADDRESS__
  // ASan keeps freed blocks resident in its quarantine, so the peak counts memory the library
  // has already given back; the Release run measures.
  GTEST_SKIP() << "peak memory is not meaningful under AddressSanitizer";
#endif
  PerceiverIOConfig c;
  c.input_dim = 64;
  c.num_latents = 256;
  c.latent_dim = 256;
  c.num_cross_heads = 1;
  c.num_self_layers = 0;
  const PerceiverIO model(c);
  const int64_t M = int64_t{1} << 17;
  Tensor inputs({1, M, c.input_dim});
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < inputs.numel(); ++i) inputs.data()[i] = normal(rng);

  const double before = testing::peak_rss_mb();
  const Tensor latents = model.encode(inputs.view());
  const double grown = testing::peak_rss_mb() - before;
  const double needed = double(M) * (c.input_dim + 2 * c.latent_dim) * 4 / (1 << 20);
  std::printf("encode of %lld inputs: peak RSS grew %.1f MB (LayerNorm, K and V: %.1f MB)\n",
              static_cast<long long>(M), grown, needed);
  EXPECT_LT(grown, needed + 64.0);
  for (int64_t i = 0; i < latents.numel(); i += 997) ASSERT_TRUE(std::isfinite(latents.data()[i]));
}

}  // namespace
}  // namespace xattn::models
