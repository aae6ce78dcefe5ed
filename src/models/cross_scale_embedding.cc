// The cross-scale embedding: each convolution writes its channels into its own columns of one
// [B, H'·W', dim] token tensor (concatenation for free), with the LayerNorm before (merging between
// stages) or after (the patch embedding).

#include <optional>
#include <string>
#include <utility>

#include "models/config.h"
#include "models/tensor_ops.h"
#include "nn/shapes.h"
#include "xattn/error.h"
#include "xattn/models/crossformer.h"

namespace xattn::models {
namespace {

std::string str(int64_t x) { return std::to_string(x); }

}  // namespace

CrossScaleEmbedding::CrossScaleEmbedding(const CrossScaleEmbeddingConfig& config)
    : config_(config) {
  const CrossScaleEmbeddingConfig& c = config_;
  if (c.in_channels < 1) throw Error("in_channels: must be >= 1, got " + str(c.in_channels));
  if (c.dim < 1) throw Error("dim: must be >= 1, got " + str(c.dim));
  if (c.stride < 1) throw Error("stride: must be >= 1, got " + str(c.stride));
  const int64_t n = static_cast<int64_t>(c.kernel_sizes.size());
  if (n == 0) throw Error("kernel_sizes: expected at least one kernel size, got none");
  if (n > 62 || c.dim % (int64_t{1} << (n - 1)) != 0)
    throw Error("dim: " + str(c.dim) + " is not divisible by 2**" + str(n - 1) + ", which " +
                str(n) + " kernel sizes need");
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = c.kernel_sizes[i];
    if (k < c.stride)  // a negative padding: the kernels would skip input pixels
      throw Error("kernel_sizes[" + str(i) + "]: " + str(k) + " is smaller than the stride " +
                  str(c.stride));
    const int64_t out = i < n - 1 ? c.dim >> (i + 1) : c.dim >> (n - 1);
    projs_.emplace_back(c.in_channels, out, k, c.stride, (k - c.stride) / 2);
  }
  norm_ = nn::LayerNorm(c.norm_before ? c.in_channels : c.dim, 1e-5f);
}

CrossScaleEmbedding CrossScaleEmbedding::load(const std::string& path) {
  std::optional<CrossScaleEmbedding> model;
  read_checkpoint(path, "CrossScaleEmbedding", [&](const std::string& json, const Parameters& p) {
    const Config j(json);
    const std::string norm = j.get<std::string>("norm");
    if (norm != "after" && norm != "before")
      throw Error("norm: expected one of after, before, got '" + norm + "'");
    model.emplace(CrossScaleEmbeddingConfig{
        j.get<int64_t>("in_channels"), j.get<int64_t>("dim"),
        j.get<std::vector<int64_t>>("kernel_sizes"), j.get<int64_t>("stride"), norm == "before"});
    model->load(p);
  });
  return std::move(*model);
}

void CrossScaleEmbedding::load(const Parameters& p) {
  CrossScaleEmbedding next = *this;  // a failed load leaves this layer as it was
  for (size_t i = 0; i < next.projs_.size(); ++i) {
    const Parameters conv = p.under("projs." + str(static_cast<int64_t>(i)) + ".");
    next.projs_[i].load(conv["weight"], conv["bias"], conv.scope());
  }
  const Parameters norm = p.under("norm.");
  next.norm_.load(norm["weight"], norm["bias"], norm.scope());
  *this = std::move(next);
}

std::array<int64_t, 2> CrossScaleEmbedding::output_size(int64_t H, int64_t W) const {
  std::array<int64_t, 2> first{};
  for (size_t i = 0; i < projs_.size(); ++i) {
    const Conv2d& conv = projs_[i];
    if (H + 2 * conv.padding() < conv.kernel() || W + 2 * conv.padding() < conv.kernel())
      throw Error("H, W: a " + str(H) + "x" + str(W) + " map is smaller than kernel " +
                  str(conv.kernel()) + " (padding " + str(conv.padding()) + ")");
    const std::array<int64_t, 2> size{conv.output_size(H), conv.output_size(W)};
    if (i == 0) first = size;
    if (size != first)
      throw Error("kernel_sizes: the convolutions give maps of different sizes (" +
                  str(first[0]) + "x" + str(first[1]) + " and " + str(size[0]) + "x" +
                  str(size[1]) + ") from a " + str(H) + "x" + str(W) + " input");
  }
  return first;
}

Tensor CrossScaleEmbedding::forward(const TensorView& images) const {
  const int64_t C = config_.in_channels;
  if (!images.present()) throw Error("images: is required");
  if (images.rank() != 4 || images.dtype == DType::kBool || images.size(1) != C ||
      images.size(0) < 0 || images.size(2) < 1 || images.size(3) < 1)
    throw Error("images: expected a float array [B, " + str(C) +
                ", height >= 1, width >= 1], got " + nn::shape_string(images));
  const int64_t B = images.size(0), H = images.size(2), W = images.size(3);
  output_size(H, W);
  // [B, C, H, W] read as [B, H, W, C] through its strides: the channels-last tokens.
  const TensorView nhwc{images.data, images.dtype,
                        Layout::strided({B, H, W, C}, {images.stride(0), images.stride(2),
                                                       images.stride(3), images.stride(1)})};
  Tensor tokens({B, H, W, C});
  nn::copy_into(nhwc, tokens, "images");
  return embed(std::move(tokens), H, W);
}

Tensor CrossScaleEmbedding::forward_tokens(const TensorView& x, int64_t H, int64_t W) const {
  check_tokens(x, "x", config_.in_channels);
  if (H < 1) throw Error("H: must be >= 1, got " + str(H));
  if (W < 1) throw Error("W: must be >= 1, got " + str(W));
  if (H * W != x.size(1))
    throw Error("H, W: a " + str(H) + "x" + str(W) + " map has " + str(H * W) +
                " tokens, x has " + str(x.size(1)));
  output_size(H, W);
  return embed(tokens_of(x, "x", config_.in_channels), H, W);
}

Tensor CrossScaleEmbedding::embed(Tensor tokens, int64_t H, int64_t W) const {
  const int64_t B = tokens.size(0), dim = config_.dim;
  if (config_.norm_before) {
    const int64_t rows = tokens.numel() / config_.in_channels;
    norm_.forward({tokens.data(), rows, config_.in_channels, config_.in_channels},
                  {tokens.data(), rows, config_.in_channels, config_.in_channels});
  }
  const auto [Ho, Wo] = output_size(H, W);
  Tensor y({B, Ho * Wo, dim});
  int64_t column = 0;
  for (const Conv2d& conv : projs_) {
    conv.forward(tokens.data(), B, H, W, y.data() + column, dim);
    column += conv.out_channels();
  }
  if (!config_.norm_before)
    norm_.forward({y.data(), B * Ho * Wo, dim, dim}, {y.data(), B * Ho * Wo, dim, dim});
  return y;
}

}  // namespace xattn::models
