// The speech recogniser: convolutions as im2col + Linear (one GEMM each), encoder and decoder
// blocks from nn::MultiheadAttention, and the cached decoding (greedy or beam search).

#include "xattn/models/speech.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <utility>

#include "models/config.h"
#include "models/tensor_ops.h"
#include "nn/shapes.h"
#include "xattn/error.h"
#include "xattn/nn/activations.h"

namespace xattn::models {
namespace {

constexpr float kEps = 1e-5f;  // torch's LayerNorm default
constexpr int64_t kKernel = 3;
constexpr int64_t kVocab = 2 + static_cast<int64_t>(sizeof(kSpeechChars)) - 1;

std::string str(int64_t x) { return std::to_string(x); }

// Frames x [T, C] as the rows a kernel-3, padding-1 Conv1d of `stride` multiplies: [T', C·3],
// each row ordered (c, k) as the weight [O, C, 3] flattens, zeros past either end.
Tensor conv_rows(const Tensor& x, int64_t stride) {
  const int64_t T = x.size(0), C = x.size(1), out = (T - 1) / stride + 1;
  Tensor rows({out, C * kKernel});
  for (int64_t t = 0; t < out; ++t)
    for (int64_t k = 0; k < kKernel; ++k) {
      const int64_t src = t * stride - 1 + k;
      if (src < 0 || src >= T) continue;
      for (int64_t c = 0; c < C; ++c) rows.data()[(t * C + c) * kKernel + k] = x.data()[src * C + c];
    }
  return rows;
}

// row += position p: sin(p·r_c) on the first half of the channels, cos on the second,
// r_c = 10000^(-c/(half-1)).
void add_position(float* row, int64_t p, int64_t dim) {
  const int64_t half = dim / 2;
  for (int64_t c = 0; c < half; ++c) {
    const double angle = double(p) * std::exp(-std::log(10000.0) * c / std::max<int64_t>(half - 1, 1));
    row[c] += static_cast<float>(std::sin(angle));
    row[half + c] += static_cast<float>(std::cos(angle));
  }
}

void gelu(Tensor& x) { nn::gelu_inplace(x.data(), x.numel(), nn::GeluApproximation::kNone); }

nn::MultiheadAttentionConfig attention_config(const SpeechRecognizerConfig& c) {
  nn::MultiheadAttentionConfig a;
  a.embed_dim = c.dim;
  a.num_heads = c.num_heads;
  a.batch_first = true;
  return a;
}

void load_norm(nn::LayerNorm& norm, const Parameters& p) {
  norm.load(p["weight"], p["bias"], p.scope());
}

// A Conv1d's weight [O, C, 3] and bias into `layer`, the matrix [O, C·3].
void load_conv(nn::Linear& layer, const Parameters& p, int64_t channels) {
  const int64_t out = layer.out_features();
  Tensor w({out, channels, kKernel});
  nn::copy_into(p["weight"], w, p.name("weight"));
  layer.load({w.data(), DType::kF32, Layout::contiguous({out, channels * kKernel})}, p["bias"],
             p.scope());
}

}  // namespace

std::string speech_text(const std::vector<int64_t>& tokens) {
  std::string text;
  for (const int64_t t : tokens) {
    if (t == kEot) break;
    if (t >= 2 && t < kVocab) text += kSpeechChars[t - 2];
  }
  return text;
}

SpeechRecognizer::SpeechRecognizer(const SpeechRecognizerConfig& config) : config_(config) {
  const SpeechRecognizerConfig& c = config_;
  if (c.n_mels < 1 || c.encoder_layers < 0 || c.decoder_layers < 1 || !(c.mlp_ratio > 0))
    throw Error("SpeechRecognizer: n_mels and decoder_layers must be >= 1, encoder_layers >= 0 "
                "and mlp_ratio > 0");
  if (c.num_heads < 1 || c.dim < 2 || c.dim % 2 || c.dim % c.num_heads)
    throw Error("dim: must be even and a multiple of num_heads = " + str(c.num_heads) + ", got " +
                str(c.dim));
  const int64_t hidden = static_cast<int64_t>(c.dim * c.mlp_ratio);
  conv1_ = nn::Linear(c.n_mels * kKernel, c.dim);
  conv2_ = nn::Linear(c.dim * kKernel, c.dim);
  for (int64_t i = 0; i < c.encoder_layers; ++i)
    encoder_.push_back({nn::LayerNorm(c.dim, kEps), nn::LayerNorm(c.dim, kEps),
                        nn::MultiheadAttention(attention_config(c)), Mlp(c.dim, hidden)});
  encoder_norm_ = nn::LayerNorm(c.dim, kEps);
  embed_ = Tensor({kVocab, c.dim});
  for (int64_t i = 0; i < c.decoder_layers; ++i)
    decoder_.push_back({nn::LayerNorm(c.dim, kEps), nn::LayerNorm(c.dim, kEps),
                        nn::LayerNorm(c.dim, kEps), nn::MultiheadAttention(attention_config(c)),
                        nn::MultiheadAttention(attention_config(c)), Mlp(c.dim, hidden)});
  decoder_norm_ = nn::LayerNorm(c.dim, kEps);
}

SpeechRecognizer SpeechRecognizer::load(const std::string& path) {
  std::optional<SpeechRecognizer> model;
  read_checkpoint(path, "SpeechRecognizer", [&](const std::string& json, const Parameters& p) {
    const Config c(json);
    SpeechRecognizerConfig config;
    config.n_mels = c.get<int64_t>("n_mels");
    config.dim = c.get<int64_t>("dim");
    config.num_heads = c.get<int64_t>("num_heads");
    config.encoder_layers = c.get<int64_t>("encoder_layers");
    config.decoder_layers = c.get<int64_t>("decoder_layers");
    config.mlp_ratio = c.get<double>("mlp_ratio");
    model.emplace(config);
    model->load(p);
  });
  return std::move(*model);
}

void SpeechRecognizer::load(const Parameters& p) {
  SpeechRecognizer next = *this;  // a failed load leaves this model as it was
  load_conv(next.conv1_, p.under("conv1."), config_.n_mels);
  load_conv(next.conv2_, p.under("conv2."), config_.dim);
  for (size_t i = 0; i < encoder_.size(); ++i) {
    const Parameters b = p.under("encoder." + std::to_string(i) + ".");
    EncoderBlock& e = next.encoder_[i];
    load_norm(e.norm1, b.under("norm1."));
    load_norm(e.norm2, b.under("norm2."));
    e.attn.load_state_dict(b.under("attn.").lookup());
    e.mlp.load(b.under("mlp."));
  }
  load_norm(next.encoder_norm_, p.under("encoder_norm."));
  nn::copy_into(p["embed.weight"], next.embed_, p.name("embed.weight"));
  for (size_t i = 0; i < decoder_.size(); ++i) {
    const Parameters b = p.under("decoder." + std::to_string(i) + ".");
    DecoderBlock& d = next.decoder_[i];
    load_norm(d.norm1, b.under("norm1."));
    load_norm(d.norm2, b.under("norm2."));
    load_norm(d.norm3, b.under("norm3."));
    d.self_attn.load_state_dict(b.under("self_attn.").lookup());
    d.cross_attn.load_state_dict(b.under("cross_attn.").lookup());
    d.mlp.load(b.under("mlp."));
  }
  load_norm(next.decoder_norm_, p.under("decoder_norm."));
  *this = std::move(next);
}

Tensor SpeechRecognizer::encode(const TensorView& features) const {
  const int64_t mels = config_.n_mels, dim = config_.dim;
  if (features.rank() != 2 || features.size(1) != mels || features.size(0) < 1)
    throw Error("features: expected [frames >= 1, " + str(mels) + "], got " +
                nn::shape_string(features));
  Tensor x({features.size(0), mels});
  nn::copy_into(features, x, "features");
  Tensor h = conv1_(conv_rows(x, 1).view());
  gelu(h);
  h = conv2_(conv_rows(h, kFeatureFramesPerAudioFrame).view());
  gelu(h);
  Tensor audio({1, h.size(0), dim});
  std::copy_n(h.data(), h.numel(), audio.data());
  for (int64_t t = 0; t < h.size(0); ++t) add_position(audio.data() + t * dim, t, dim);
  nn::MultiheadAttentionOptions no_weights;
  no_weights.need_weights = false;
  for (const EncoderBlock& b : encoder_) {
    const Tensor n = apply(b.norm1, audio);
    add_into(audio, b.attn.forward(n.view(), n.view(), n.view(), no_weights).out);
    add_into(audio, b.mlp.forward(apply(b.norm2, audio)));
  }
  Tensor out = apply(encoder_norm_, audio);
  Tensor flat({out.size(1), dim});
  std::copy_n(out.data(), out.numel(), flat.data());
  return flat;
}

Tensor SpeechRecognizer::embed_tokens(const std::vector<int64_t>& tokens,
                                      const std::vector<int64_t>& positions, int64_t rows) const {
  const int64_t dim = config_.dim, n = static_cast<int64_t>(tokens.size());
  Tensor x({rows, n / rows, dim});
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= kVocab)
      throw Error("tokens[" + str(i) + "]: " + str(tokens[i]) + " is out of range [0, " +
                  str(kVocab) + ")");
    std::copy_n(embed_.data() + tokens[i] * dim, dim, x.data() + i * dim);
    add_position(x.data() + i * dim, positions[i], dim);
  }
  return x;
}

Tensor SpeechRecognizer::output_logits(const Tensor& x) const {
  const Tensor n = apply(decoder_norm_, x);
  const int64_t rows = n.numel() / config_.dim;
  Tensor logits({rows, kVocab});
  gemm({rows, kVocab, config_.dim, n.data(), config_.dim, embed_.data(), config_.dim,
        logits.data(), kVocab, /*b_transposed=*/true});
  return logits;
}

Tensor SpeechRecognizer::logits(const Tensor& audio, const std::vector<int64_t>& tokens) const {
  const int64_t L = static_cast<int64_t>(tokens.size()), dim = config_.dim;
  if (audio.rank() != 2 || audio.size(1) != dim)
    throw Error("audio: expected [frames, " + str(dim) + "], got " +
                nn::shape_string(audio.view()));
  if (L < 1) throw Error("tokens: expected at least one (SOT), got none");
  std::vector<int64_t> positions(L);
  std::iota(positions.begin(), positions.end(), 0);
  Tensor x = embed_tokens(tokens, positions, 1);  // [1, L, dim]
  const TensorView memory{audio.data(), DType::kF32, Layout::contiguous({1, audio.size(0), dim})};
  nn::MultiheadAttentionOptions causal, plain;
  causal.is_causal = true;
  causal.need_weights = plain.need_weights = false;
  for (const DecoderBlock& b : decoder_) {
    const Tensor n1 = apply(b.norm1, x);
    add_into(x, b.self_attn.forward(n1.view(), n1.view(), n1.view(), causal).out);
    const Tensor n2 = apply(b.norm2, x);
    add_into(x, b.cross_attn.forward(n2.view(), memory, memory, plain).out);
    add_into(x, b.mlp.forward(apply(b.norm3, x)));
  }
  return output_logits(x);
}

namespace {

// One hypothesis of the search.
struct Hypothesis {
  std::vector<int64_t> tokens;     // emitted, without SOT
  std::vector<float> attention;    // [tokens][frames]
  double log_probability = 0;
  bool ended = false;
};

// log-softmax of one row of logits, in double.
std::vector<double> log_softmax(const float* row, int64_t n) {
  const float top = *std::max_element(row, row + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(row[i]) - top);
  std::vector<double> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = double(row[i]) - top - std::log(sum);
  return out;
}

}  // namespace

Transcript SpeechRecognizer::transcribe(const Tensor& audio, int64_t beams,
                                        int64_t max_tokens) const {
  const int64_t dim = config_.dim;
  if (beams < 1 || beams > 64) throw Error("beams: must be 1 to 64, got " + str(beams));
  if (max_tokens < 1) throw Error("max_tokens: must be >= 1, got " + str(max_tokens));
  if (audio.rank() != 2 || audio.size(1) != dim || audio.size(0) < 1)
    throw Error("audio: expected [frames >= 1, " + str(dim) + "], got " +
                nn::shape_string(audio.view()));
  const int64_t S = audio.size(0), layers = static_cast<int64_t>(decoder_.size());

  // The encoder output projected once per layer into a cache all beams read (query row n·beams
  // + b reads cache sequence n = 0); each beam's own tokens in its row of the self caches.
  const TensorView memory{audio.data(), DType::kF32, Layout::contiguous({1, S, dim})};
  std::vector<nn::KVCache> cross, self;
  for (const DecoderBlock& b : decoder_) {
    cross.push_back(b.cross_attn.make_cache(1, S));
    b.cross_attn.extend_cache(cross.back(), memory, memory);
    self.push_back(b.self_attn.make_cache(beams, 16));
  }
  std::vector<Hypothesis> hyps(beams);
  for (int64_t b = 1; b < beams; ++b) hyps[b].log_probability = -1e30;  // one start, not `beams`
  nn::MultiheadAttentionOptions no_weights, weights;
  no_weights.need_weights = false;
  for (int64_t t = 0; t < max_tokens; ++t) {
    std::vector<int64_t> last(beams);
    for (int64_t b = 0; b < beams; ++b)
      last[b] = hyps[b].tokens.empty() ? kSot : hyps[b].tokens.back();
    Tensor x = embed_tokens(last, std::vector<int64_t>(beams, t), beams);  // [beams, 1, dim]
    std::vector<float> looked(beams * S, 0.0f);
    for (int64_t l = 0; l < layers; ++l) {
      const DecoderBlock& blk = decoder_[l];
      const Tensor n1 = apply(blk.norm1, x);
      blk.self_attn.extend_cache(self[l], n1.view(), n1.view());
      add_into(x, blk.self_attn.forward_cached(n1.view(), self[l], no_weights).out);
      const Tensor n2 = apply(blk.norm2, x);
      nn::MultiheadAttentionResult r = blk.cross_attn.forward_cached(n2.view(), cross[l], weights);
      add_into(x, r.out);
      for (int64_t i = 0; i < beams * S; ++i) looked[i] += r.weights.data()[i] / layers;
      add_into(x, blk.mlp.forward(apply(blk.norm3, x)));
    }
    const Tensor logits = output_logits(x);  // [beams, vocab]

    // Candidates: every live hypothesis extended by every token; an ended one carries over.
    struct Candidate {
      double score;
      int64_t parent, token;  // token -1: an ended hypothesis, unchanged
    };
    std::vector<Candidate> candidates;
    for (int64_t b = 0; b < beams; ++b) {
      if (hyps[b].ended) {
        candidates.push_back({hyps[b].log_probability, b, -1});
        continue;
      }
      const std::vector<double> lp = log_softmax(logits.data() + b * kVocab, kVocab);
      for (int64_t v = 0; v < kVocab; ++v)
        candidates.push_back({hyps[b].log_probability + lp[v], b, v});
    }
    // The best `beams`; ties broken by parent then token, so the search is deterministic.
    const size_t keep = std::min<size_t>(beams, candidates.size());
    std::partial_sort(candidates.begin(), candidates.begin() + keep, candidates.end(),
                      [](const Candidate& a, const Candidate& b) {
                        if (a.score != b.score) return a.score > b.score;
                        return a.parent != b.parent ? a.parent < b.parent : a.token < b.token;
                      });
    std::vector<Hypothesis> next(beams);
    std::vector<int64_t> parents(beams);
    for (int64_t b = 0; b < beams; ++b) {
      const Candidate& c = candidates[std::min<size_t>(b, keep - 1)];
      parents[b] = c.parent;
      next[b] = hyps[c.parent];
      next[b].log_probability = c.score;
      if (c.token < 0) continue;
      if (c.token == kEot) {
        next[b].ended = true;
        continue;
      }
      next[b].tokens.push_back(c.token);
      next[b].attention.insert(next[b].attention.end(), looked.begin() + c.parent * S,
                               looked.begin() + (c.parent + 1) * S);
    }
    for (nn::KVCache& cache : self) cache.select(parents);
    hyps = std::move(next);
    if (std::all_of(hyps.begin(), hyps.end(), [](const Hypothesis& h) { return h.ended; })) break;
  }
  // The best by log-probability per token (a total would favour the shortest).
  const auto per_token = [](const Hypothesis& h) {
    return h.log_probability / double(h.tokens.size() + 1);
  };
  const Hypothesis& best = *std::max_element(
      hyps.begin(), hyps.end(),
      [&](const Hypothesis& a, const Hypothesis& b) { return per_token(a) < per_token(b); });
  return {speech_text(best.tokens), best.tokens, best.attention, S, best.log_probability};
}

}  // namespace xattn::models
