#pragma once
// The speech recogniser for inference: the C++ twin of python/xattn/models/speech.py, loading
// its checkpoints. The encoder runs once; its output is projected into each decoder layer's
// cross-attention KVCache once; the decoder then takes one token per step against the caches,
// greedily or in a beam search whose beams all read the one cross-attention cache.

#include <cstdint>
#include <string>
#include <vector>

#include "xattn/models/blocks.h"
#include "xattn/models/parameters.h"
#include "xattn/nn/kv_cache.h"
#include "xattn/nn/layer_norm.h"
#include "xattn/nn/linear.h"
#include "xattn/nn/multihead_attention.h"
#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::models {

struct SpeechRecognizerConfig {
  int64_t n_mels = 80;
  int64_t dim = 128;
  int64_t num_heads = 4;
  int64_t encoder_layers = 4;
  int64_t decoder_layers = 3;
  double mlp_ratio = 4.0;
};

// Token ids: EOT 0, SOT 1, then the characters of kSpeechChars.
inline constexpr int64_t kEot = 0, kSot = 1;
inline constexpr char kSpeechChars[] = " abcdefghijklmnopqrstuvwxyz'";
std::string speech_text(const std::vector<int64_t>& tokens);  // up to the first EOT

struct Transcript {
  std::string text;
  std::vector<int64_t> tokens;  // without SOT, without the final EOT
  // Where each token looked: the cross-attention weights [tokens.size(), audio frames],
  // averaged over the decoder's layers and heads (audio frames are 20 ms: 2 feature frames).
  std::vector<float> cross_attention;
  int64_t audio_frames = 0;
  double log_probability = 0;
};

class SpeechRecognizer {
 public:
  // Feature frames per encoder (audio) frame: the second convolution's stride.
  static constexpr int64_t kFeatureFramesPerAudioFrame = 2;

  explicit SpeechRecognizer(const SpeechRecognizerConfig& config);
  static SpeechRecognizer load(const std::string& path);  // a save_checkpoint file
  void load(const Parameters& p);
  const SpeechRecognizerConfig& config() const { return config_; }

  // features [T, n_mels] (xattn::audio::log_mel; any float dtype and strides) -> the encoder's
  // output [ceil(T / 2), dim]. Throws xattn::Error naming `features` for a wrong shape.
  Tensor encode(const TensorView& features) const;
  // Logits [L, vocab] of every position of `tokens` (SOT first), the whole prefix at once:
  // the reference the cached decoding is checked against.
  Tensor logits(const Tensor& audio, const std::vector<int64_t>& tokens) const;
  // Decodes with the caches: greedy for beams = 1, else a beam search keeping `beams`
  // hypotheses; once all have ended (or after max_tokens), the one with the highest
  // log-probability per token wins.
  Transcript transcribe(const Tensor& audio, int64_t beams = 1, int64_t max_tokens = 200) const;

 private:
  struct EncoderBlock {
    nn::LayerNorm norm1, norm2;
    nn::MultiheadAttention attn;
    Mlp mlp;
  };
  struct DecoderBlock {
    nn::LayerNorm norm1, norm2, norm3;
    nn::MultiheadAttention self_attn, cross_attn;
    Mlp mlp;
  };
  // tokens[i] embedded at positions[i], as [rows, tokens / rows, dim].
  Tensor embed_tokens(const std::vector<int64_t>& tokens, const std::vector<int64_t>& positions,
                      int64_t rows) const;
  Tensor output_logits(const Tensor& x) const;  // decoder_norm, then the tied embedding

  SpeechRecognizerConfig config_;
  nn::Linear conv1_, conv2_;  // the 1-D convolutions (kernel 3) as [dim, channels·3] matrices
  std::vector<EncoderBlock> encoder_;
  nn::LayerNorm encoder_norm_, decoder_norm_;
  Tensor embed_;  // [vocab, dim]
  std::vector<DecoderBlock> decoder_;
};

}  // namespace xattn::models
