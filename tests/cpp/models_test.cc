// The C++ models' own properties, without Python: interpolation weights against what a resize
// must do, a padded Perceiver IO batch against each row alone, CrossViT's reassociated
// cross-attention against the same module computed the plain way from nn layers, parameter
// sources, and configuration errors. (tests/python/test_models_cpp.py checks every model against
// its Python twin on the same checkpoint.)

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "models/tensor_ops.h"
#include "xattn/attention.h"
#include "xattn/error.h"
#include "xattn/models/crossvit.h"
#include "xattn/models/parameters.h"
#include "xattn/models/perceiver_io.h"

namespace xattn::models {
namespace {

using ::testing::HasSubstr;

Tensor random_tensor(std::vector<int64_t> shape, uint64_t seed, float scale = 1.0f) {
  Tensor t(std::move(shape));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = normal(rng);
  return t;
}

double max_abs_diff(const Tensor& a, const Tensor& b, int64_t offset_a = 0, int64_t offset_b = 0,
                    int64_t n = -1) {
  if (n < 0) n = a.numel();
  double m = 0;
  for (int64_t i = 0; i < n; ++i)
    m = std::max(m, std::abs(double(a.data()[offset_a + i]) - b.data()[offset_b + i]));
  return m;
}

TEST(ResizeMatrix, SameSizeIsTheIdentity) {
  for (Resize kind : {Resize::kBilinear, Resize::kBicubic})
    for (int64_t n : {1, 2, 7}) {
      const std::vector<float> r = resize_matrix(n, n, kind);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) EXPECT_EQ(r[i * n + j], i == j ? 1.0f : 0.0f);
    }
}

TEST(ResizeMatrix, ReproducesConstantsAndLinearBilinearRamps) {
  // Every row sums to 1 (a constant image stays constant); bilinear upsampling by 2 of a ramp
  // gives the ramp sampled at the output centres, clamped at the edges.
  for (Resize kind : {Resize::kBilinear, Resize::kBicubic})
    for (auto [in, out] : {std::pair{4, 9}, std::pair{9, 4}, std::pair{5, 5}, std::pair{1, 3}}) {
      const std::vector<float> r = resize_matrix(in, out, kind);
      for (int64_t i = 0; i < out; ++i) {
        double sum = 0;
        for (int64_t j = 0; j < in; ++j) sum += r[i * in + j];
        EXPECT_NEAR(sum, 1.0, 1e-6) << in << " -> " << out;
      }
    }
  const std::vector<float> r = resize_matrix(4, 8, Resize::kBilinear);
  for (int64_t o = 0; o < 8; ++o) {
    double y = 0;
    for (int64_t i = 0; i < 4; ++i) y += r[o * 4 + i] * double(i);
    EXPECT_NEAR(y, std::clamp((o + 0.5) / 2 - 0.5, 0.0, 3.0), 1e-6) << o;
  }
}

PerceiverIOConfig small_perceiver() {
  PerceiverIOConfig c;
  c.input_dim = 6;
  c.num_latents = 5;
  c.latent_dim = 16;
  c.num_cross_heads = 2;
  c.num_latent_heads = 4;
  c.num_self_layers = 1;
  c.query_dim = 8;
  c.output_dim = 3;
  return c;
}

TEST(PerceiverIO, PaddedBatchEqualsEachRowAlone) {
  const PerceiverIO model(small_perceiver());
  const int64_t B = 3, M = 40, O = 4;
  Tensor inputs = random_tensor({B, M, 6}, 1);
  const std::vector<int64_t> lens = {40, 17, 0};
  for (int64_t b = 0; b < B; ++b)  // padding with huge values: it must have no effect at all
    for (int64_t i = lens[b] * 6; i < M * 6; ++i) inputs.data()[b * M * 6 + i] = 1e30f;
  const Tensor queries = random_tensor({B, O, 8}, 2);
  const Tensor out = model.forward(inputs.view(), queries.view(), lens);
  for (int64_t b = 0; b < B; ++b) {
    const TensorView row{inputs.data() + b * M * 6, DType::kF32,
                         Layout::contiguous({1, lens[b], 6})};
    const TensorView query{queries.data() + b * O * 8, DType::kF32, Layout::contiguous({1, O, 8})};
    const Tensor alone = model.forward(row, query);
    // Not bit for bit: OpenBLAS's sgemm rounds a row differently as the row count changes on
    // some CPUs (an Intel Xeon with AVX-512 here: Linear(16, 16) over 120 rows and over 5 of
    // them differ in the last bit). One unit of f32 rounding per layer bounds it; padding that
    // leaked in would show as 1e30 or NaN.
    double scale = 0;
    for (int64_t i = 0; i < O * 3; ++i) scale = std::max(scale, double(std::abs(alone.data()[i])));
    EXPECT_LE(max_abs_diff(out, alone, b * O * 3, 0, O * 3), 1e-6 * scale) << "row " << b;
  }
}

TEST(PerceiverIO, RefusesBadLengthsAndShapes) {
  const PerceiverIO model(small_perceiver());
  const Tensor inputs = random_tensor({2, 10, 6}, 1), queries = random_tensor({2, 3, 8}, 2);
  const std::vector<int64_t> too_long = {3, 11}, too_few = {3};
  EXPECT_THAT([&] { model.encode(inputs.view(), too_long); },
              ::testing::ThrowsMessage<Error>(HasSubstr("input_lens[1] = 11 is out of range [0, 10]")));
  EXPECT_THAT([&] { model.encode(inputs.view(), too_few); },
              ::testing::ThrowsMessage<Error>(HasSubstr("input_lens: expected 2 lengths")));
  EXPECT_THAT([&] { model.encode(queries.view()); },
              ::testing::ThrowsMessage<Error>(HasSubstr("inputs: expected a float array [B, M, 6]")));
  const Tensor latents = model.encode(inputs.view());
  const Tensor other_batch = random_tensor({3, 3, 8}, 3);
  EXPECT_THAT([&] { model.decode(latents, other_batch.view()); },
              ::testing::ThrowsMessage<Error>(HasSubstr("queries: expected a float array [2, L, 8]")));
  PerceiverIOConfig bad = small_perceiver();
  bad.num_latent_heads = 3;
  EXPECT_THAT([&] { PerceiverIO{bad}; },
              ::testing::ThrowsMessage<Error>(HasSubstr("num_latent_heads: 3 heads must divide")));
}

// Parameters from a map, as an engine keeping its own weights would supply them.
struct MapSource {
  std::map<std::string, Tensor> tensors;
  Parameters parameters() const {
    std::vector<std::string> names;
    for (const auto& [name, t] : tensors) names.push_back(name);
    return Parameters([this](std::string_view name) {
      const auto it = tensors.find(std::string(name));
      return it == tensors.end() ? TensorView{} : it->second.view();
    }, names);
  }
};

TEST(CrossViTCrossAttention, EqualsThePlainFormulation) {
  // The module's reassociated form against the textbook one built here from nn layers and one
  // kernel call on the projected heads: q = x₀Wqᵀ + bq, k = xWkᵀ + bk, v = xWvᵀ + bv.
  const int64_t B = 2, N = 9, C = 24, H = 3, D = C / H;
  MapSource source;
  uint64_t seed = 10;
  for (const char* name : {"wq", "wk", "wv", "proj"}) {
    source.tensors[std::string(name) + ".weight"] = random_tensor({C, C}, seed++, 0.2f);
    source.tensors[std::string(name) + ".bias"] = random_tensor({C}, seed++, 0.2f);
  }
  CrossViTCrossAttention module({C, H, /*qkv_bias=*/true});
  const Parameters p = source.parameters();
  module.load(p);
  p.expect_all_used();
  const Tensor x = random_tensor({B, N, C}, 3);

  const auto linear = [&](const char* name) {
    nn::Linear l(C, C);
    l.load(source.tensors[std::string(name) + ".weight"].view(),
           source.tensors[std::string(name) + ".bias"].view(), name);
    return l;
  };
  const Tensor q = apply(linear("wq"), slice_tokens(x, 0, 1)), k = apply(linear("wk"), x),
               v = apply(linear("wv"), x);
  const auto heads = [&](const Tensor& t, int64_t L) {
    return TensorView{t.data(), DType::kF32, Layout::strided({B, H, L, D}, {L * C, D, C, 1})};
  };
  Tensor a({B, 1, C});
  attention(heads(q, 1), heads(k, N), heads(v, N), {},
            {MutableTensorView{a.data(), DType::kF32, heads(a, 1).layout}});
  const Tensor want = apply(linear("proj"), a), got = module.forward(x.view());
  double scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i) scale = std::max(scale, double(std::abs(want.data()[i])));
  EXPECT_LE(max_abs_diff(got, want), 1e-5 * scale);
}

TEST(Parameters, NamesTheUnusedAndTheMissing) {
  MapSource source;
  source.tensors["a.weight"] = Tensor({2});
  source.tensors["b"] = Tensor({1});
  const Parameters p = source.parameters();
  EXPECT_EQ(p.under("a.").name("weight"), "a.weight");
  EXPECT_EQ(p.under("a.").under("c.").scope(), "a.c");
  EXPECT_TRUE(p.under("a.")["weight"].present());
  EXPECT_FALSE(p["missing"].present());
  EXPECT_THAT([&] { p.expect_all_used(); },
              ::testing::ThrowsMessage<Error>(HasSubstr("unexpected tensor 'b'")));
  (void)p["b"];
  EXPECT_NO_THROW(p.expect_all_used());
}

TEST(CrossViT, RefusesBadConfigurationsAndImages) {
  CrossViTConfig c;
  c.img_size = {30, 32};
  c.patch_size = {6, 8};
  c.embed_dim = {16, 24};
  c.num_heads = {2, 3};
  c.depth = {{1, 0}};
  c.num_classes = 4;
  const CrossViT model(c);
  const Tensor wrong_channels = random_tensor({1, 2, 30, 30}, 1);
  EXPECT_THAT([&] { model.forward(wrong_channels.view()); },
              ::testing::ThrowsMessage<Error>(HasSubstr("images: expected a float array [B, 3,")));
  CrossViTConfig bad = c;
  bad.img_size = {31, 32};
  EXPECT_THAT([&] { CrossViT{bad}; },
              ::testing::ThrowsMessage<Error>(HasSubstr("img_size[0]: 31 is not a positive multiple")));
  EXPECT_THAT([&] { fusion_scheme("sum"); }, ::testing::ThrowsMessage<Error>(HasSubstr("scheme:")));
  CrossViTFusion pairwise({{16, 24}, {2, 3}, FusionScheme::kPairwise, true});
  const Branches xs = {random_tensor({1, 1 + 6, 16}, 1), random_tensor({1, 1 + 4, 24}, 2)};
  EXPECT_THAT([&] { pairwise.forward(xs); },
              ::testing::ThrowsMessage<Error>(HasSubstr("xs[0]: pairwise fusion needs a square")));
  const Branches wrong_width = {random_tensor({1, 5, 16}, 1), random_tensor({1, 5, 16}, 2)};
  EXPECT_THAT([&] { pairwise.forward(wrong_width); },
              ::testing::ThrowsMessage<Error>(HasSubstr("xs[1]: expected [1, 1 + N, 24]")));
}

}  // namespace
}  // namespace xattn::models
