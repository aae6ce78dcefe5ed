// The CrossViT classifier: per branch, resize (bicubic), patch embedding (the convolution as
// patches·Wᵀ, its stride equal to its kernel), CLS token and position embedding; the multi-scale
// encoders; both branches' heads on their normalized CLS tokens, averaged.

#include "xattn/models/crossvit.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "models/config.h"
#include "models/tensor_ops.h"
#include "nn/shapes.h"
#include "xattn/error.h"

namespace xattn::models {
namespace {

constexpr float kEps = 1e-6f;

std::string str(int64_t x) { return std::to_string(x); }

// images [B, C, H, W] resized to [B, C, S, S] as interpolate(mode="bicubic") does: Y = Rh·X·Rwᵀ.
Tensor resize_images(const Tensor& x, int64_t S) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const std::vector<float> rh = resize_matrix(H, S, Resize::kBicubic);  // [S, H]
  const std::vector<float> rw = resize_matrix(W, S, Resize::kBicubic);  // [S, W]
  Tensor rows({B * C * H, S});                                          // X·Rwᵀ
  gemm({B * C * H, S, W, x.data(), W, rw.data(), W, rows.data(), S, /*b_transposed=*/true});
  Tensor y({B, C, S, S});
  for (int64_t i = 0; i < B * C; ++i)
    gemm({S, S, H, rh.data(), H, rows.data() + i * H * S, S, y.data() + i * S * S, S});
  return y;
}

// The non-overlapping p × p patches of images [B, C, S, S] as rows [B·g², C·p·p] (g = S / p),
// each in the order of a Conv2d weight's [C, p, p].
Tensor patches(const Tensor& x, int64_t p) {
  const int64_t B = x.size(0), C = x.size(1), S = x.size(2), g = S / p;
  Tensor rows({B * g * g, C * p * p});
  float* out = rows.data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t gy = 0; gy < g; ++gy)
      for (int64_t gx = 0; gx < g; ++gx)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t ky = 0; ky < p; ++ky, out += p)
            std::copy_n(x.data() + ((b * C + c) * S + gy * p + ky) * S + gx * p, p, out);
  return rows;
}

CrossViTFusionConfig fusion_of(const CrossViTConfig& c) {
  return {c.embed_dim, c.num_heads, c.fusion, c.qkv_bias};
}

}  // namespace

CrossViT::CrossViT(const CrossViTConfig& config) : config_(config) {
  const CrossViTConfig& c = config_;
  if (c.in_chans < 1 || c.num_classes < 1)
    throw Error("CrossViT: in_chans and num_classes must be >= 1, got " + str(c.in_chans) +
                " and " + str(c.num_classes));
  for (int d = 0; d < 2; ++d) {
    if (c.patch_size[d] < 1 || c.img_size[d] < 1 || c.img_size[d] % c.patch_size[d] != 0)
      throw Error("img_size[" + str(d) + "]: " + str(c.img_size[d]) +
                  " is not a positive multiple of patch_size[" + str(d) + "] = " +
                  str(c.patch_size[d]));
    const int64_t grid = c.img_size[d] / c.patch_size[d], dim = c.embed_dim[d];
    if (dim < 1) throw Error("embed_dim[" + str(d) + "]: must be >= 1, got " + str(dim));
    patch_embed_[d] = nn::Linear(c.in_chans * c.patch_size[d] * c.patch_size[d], dim);
    cls_token_[d] = Tensor({1, 1, dim});
    pos_embed_[d] = Tensor({1, 1 + grid * grid, dim});
    norm_[d] = nn::LayerNorm(dim, kEps);
    head_[d] = nn::Linear(dim, c.num_classes);
  }
  for (const auto& depths : c.depth) blocks_.emplace_back(fusion_of(c), depths, c.mlp_ratio);
}

CrossViT CrossViT::load(const std::string& path) {
  std::optional<CrossViT> model;
  read_checkpoint(path, "CrossViT", [&](const std::string& json, const Parameters& p) {
    const Config j(json);
    CrossViTConfig c;
    c.img_size = j.get<std::array<int64_t, 2>>("img_size");
    c.patch_size = j.get<std::array<int64_t, 2>>("patch_size");
    c.in_chans = j.get<int64_t>("in_chans");
    c.num_classes = j.get<int64_t>("num_classes");
    c.embed_dim = j.get<std::array<int64_t, 2>>("embed_dim");
    c.depth = j.get<std::vector<std::array<int64_t, 2>>>("depth");
    c.num_heads = j.get<std::array<int64_t, 2>>("num_heads");
    c.mlp_ratio = j.get<std::array<double, 2>>("mlp_ratio");
    c.qkv_bias = j.get<bool>("qkv_bias");
    c.fusion = fusion_scheme(j.get<std::string>("fusion"));
    model.emplace(c);
    model->load(p);
  });
  return std::move(*model);
}

void CrossViT::load(const Parameters& p) {
  CrossViT next = *this;  // a failed load leaves this model as it was
  for (int d = 0; d < 2; ++d) {
    const std::string i = str(d);
    const Parameters conv = p.under("patch_embed." + i + ".proj.");
    const int64_t patch = config_.patch_size[d], dim = config_.embed_dim[d];
    Tensor weight({dim, config_.in_chans, patch, patch});
    nn::copy_into(conv["weight"], weight, conv.name("weight"));
    next.patch_embed_[d].load(
        {weight.data(), DType::kF32, Layout::contiguous({dim, config_.in_chans * patch * patch})},
        conv["bias"], conv.scope());
    nn::copy_into(p["cls_token." + i], next.cls_token_[d], p.name("cls_token." + i));
    nn::copy_into(p["pos_embed." + i], next.pos_embed_[d], p.name("pos_embed." + i));
    const Parameters norm = p.under("norm." + i + "."), head = p.under("head." + i + ".");
    next.norm_[d].load(norm["weight"], norm["bias"], norm.scope());
    next.head_[d].load(head["weight"], head["bias"], head.scope());
  }
  for (size_t k = 0; k < next.blocks_.size(); ++k)
    next.blocks_[k].load(p.under("blocks." + str(static_cast<int64_t>(k)) + "."));
  *this = std::move(next);
}

Tensor CrossViT::forward(const TensorView& images) const {
  const CrossViTConfig& c = config_;
  if (!images.present()) throw Error("images: is required");
  if (images.rank() != 4 || images.dtype == DType::kBool || images.size(1) != c.in_chans ||
      images.size(0) < 0 || images.size(2) < 1 || images.size(3) < 1)
    throw Error("images: expected a float array [B, " + str(c.in_chans) +
                ", height >= 1, width >= 1], got " + nn::shape_string(images));
  const int64_t B = images.size(0);
  Tensor x({B, c.in_chans, images.size(2), images.size(3)});
  nn::copy_into(images, x, "images");

  Branches xs;
  for (int d = 0; d < 2; ++d) {
    const int64_t S = c.img_size[d], p = c.patch_size[d], g = S / p, dim = c.embed_dim[d];
    const bool same = x.size(2) == S && x.size(3) == S;
    const Tensor embedded = apply(patch_embed_[d], patches(same ? x : resize_images(x, S), p));
    Tensor tokens({B, 1 + g * g, dim});
    for (int64_t b = 0; b < B; ++b) {
      float* row = tokens.data() + b * (1 + g * g) * dim;
      std::copy_n(cls_token_[d].data(), dim, row);
      std::copy_n(embedded.data() + b * g * g * dim, g * g * dim, row + dim);
      for (int64_t i = 0; i < (1 + g * g) * dim; ++i) row[i] += pos_embed_[d].data()[i];
    }
    xs[d] = std::move(tokens);
  }
  for (const MultiScaleBlock& block : blocks_) xs = block.forward(std::move(xs));

  Tensor logits({B, c.num_classes});
  for (int d = 0; d < 2; ++d) {
    const Tensor h = apply(head_[d], apply(norm_[d], slice_tokens(xs[d], 0, 1)));
    for (int64_t i = 0; i < logits.numel(); ++i) logits.data()[i] += h.data()[i];
  }
  for (int64_t i = 0; i < logits.numel(); ++i) logits.data()[i] /= 2;
  return logits;
}

}  // namespace xattn::models
