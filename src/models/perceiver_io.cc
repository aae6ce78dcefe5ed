// Perceiver IO: latents ← latents + CA(LN(latents), LN(inputs)) (+ MLP), self-attention blocks,
// outputs ← Linear(queries + CA(LN(queries), LN(latents)) (+ MLP)).

#include "xattn/models/perceiver_io.h"

#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "models/config.h"
#include "models/tensor_ops.h"
#include "nn/shapes.h"
#include "xattn/error.h"

namespace xattn::models {
namespace {

constexpr float kEps = 1e-5f;

std::string str(int64_t x) { return std::to_string(x); }

PerceiverIOConfig resolved(PerceiverIOConfig c) {
  if (c.query_dim == 0) c.query_dim = c.latent_dim;
  if (c.output_dim == 0) c.output_dim = c.query_dim;
  for (const auto& [value, name] :
       {std::pair{c.input_dim, "input_dim"}, std::pair{c.num_latents, "num_latents"},
        std::pair{c.latent_dim, "latent_dim"}, std::pair{c.query_dim, "query_dim"},
        std::pair{c.output_dim, "output_dim"}})
    if (value < 1) throw Error(std::string(name) + ": must be >= 1, got " + str(value));
  if (c.num_self_layers < 0)
    throw Error("num_self_layers: must be >= 0, got " + str(c.num_self_layers));
  for (const auto& [heads, width, name] :
       {std::tuple{c.num_cross_heads, c.latent_dim, "num_cross_heads"},
        std::tuple{c.num_cross_heads, c.query_dim, "num_cross_heads"},
        std::tuple{c.num_latent_heads, c.latent_dim, "num_latent_heads"}})
    if (heads < 1 || width % heads != 0)
      throw Error(std::string(name) + ": " + str(heads) + " heads must divide the width " +
                  str(width));
  return c;
}

}  // namespace

PerceiverIO::PerceiverIO(const PerceiverIOConfig& config)
    : config_(resolved(config)),
      latents_({config_.num_latents, config_.latent_dim}),
      encoder_(config_.latent_dim, config_.input_dim, config_.num_cross_heads, config_.mlp_ratio,
               kEps),
      decoder_(config_.query_dim, config_.latent_dim, config_.num_cross_heads, config_.mlp_ratio,
               kEps),
      output_(config_.query_dim, config_.output_dim) {
  for (int64_t i = 0; i < config_.num_self_layers; ++i)
    processor_.emplace_back(config_.latent_dim, config_.num_latent_heads, config_.mlp_ratio,
                            /*qkv_bias=*/true, kEps);
}

PerceiverIO PerceiverIO::load(const std::string& path) {
  std::optional<PerceiverIO> model;
  read_checkpoint(path, "PerceiverIO", [&](const std::string& json, const Parameters& p) {
    const Config j(json);
    PerceiverIOConfig c;
    c.input_dim = j.get<int64_t>("input_dim");
    c.num_latents = j.get<int64_t>("num_latents");
    c.latent_dim = j.get<int64_t>("latent_dim");
    c.num_cross_heads = j.get<int64_t>("num_cross_heads");
    c.num_latent_heads = j.get<int64_t>("num_latent_heads");
    c.num_self_layers = j.get<int64_t>("num_self_layers");
    c.query_dim = j.get<int64_t>("query_dim", 0);
    c.output_dim = j.get<int64_t>("output_dim", 0);
    c.mlp_ratio = j.get<double>("mlp_ratio");
    model.emplace(c);
    model->load(p);
  });
  return std::move(*model);
}

void PerceiverIO::load(const Parameters& p) {
  PerceiverIO next = *this;  // a failed load leaves this model as it was
  nn::copy_into(p["latents"], next.latents_, p.name("latents"));
  next.encoder_.load(p.under("encoder."));
  for (size_t i = 0; i < next.processor_.size(); ++i)
    next.processor_[i].load(p.under("processor." + str(static_cast<int64_t>(i)) + "."));
  next.decoder_.load(p.under("decoder."));
  const Parameters out = p.under("output.");
  next.output_.load(out["weight"], out["bias"], out.scope());
  *this = std::move(next);
}

Tensor PerceiverIO::encode(const TensorView& inputs, std::span<const int64_t> input_lens) const {
  if (!inputs.present()) throw Error("inputs: is required");
  if (inputs.rank() != 3 || inputs.dtype == DType::kBool || inputs.size(2) != config_.input_dim ||
      inputs.size(0) < 0 || inputs.size(1) < 0)
    throw Error("inputs: expected a float array [B, M, " + str(config_.input_dim) + "], got " +
                nn::shape_string(inputs));
  const int64_t B = inputs.size(0), M = inputs.size(1), N = config_.num_latents,
                D = config_.latent_dim;
  if (!input_lens.empty()) {
    if (static_cast<int64_t>(input_lens.size()) != B)
      throw Error("input_lens: expected " + str(B) + " lengths (one per batch row), got " +
                  str(static_cast<int64_t>(input_lens.size())));
    for (int64_t b = 0; b < B; ++b)
      if (input_lens[b] < 0 || input_lens[b] > M)
        throw Error("input_lens[" + str(b) + "] = " + str(input_lens[b]) +
                    " is out of range [0, " + str(M) + "]");
  }
  Tensor latents({B, N, D});
  for (int64_t b = 0; b < B; ++b) std::copy_n(latents_.data(), N * D, latents.data() + b * N * D);
  encoder_.forward(latents, inputs, input_lens);
  return latents;
}

Tensor PerceiverIO::process(Tensor latents) const {
  check_tokens(latents.view(), "latents", config_.latent_dim);
  for (const Block& block : processor_) block.forward(latents);
  return latents;
}

Tensor PerceiverIO::decode(const Tensor& latents, const TensorView& queries) const {
  check_tokens(latents.view(), "latents", config_.latent_dim);
  Tensor x = tokens_of(queries, "queries", config_.query_dim, latents.size(0));
  decoder_.forward(x, latents.view());
  return apply(output_, x);
}

Tensor PerceiverIO::forward(const TensorView& inputs, const TensorView& queries,
                            std::span<const int64_t> input_lens) const {
  if (inputs.present() && inputs.rank() == 3)  // the queries' batch is checked before encoding
    check_tokens(queries, "queries", config_.query_dim, inputs.size(0));
  return decode(process(encode(inputs, input_lens)), queries);
}

}  // namespace xattn::models
