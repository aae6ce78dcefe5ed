// Reads the audio (any rate and channel count: resampled and mixed down), computes its log-mel
// features, encodes them once and decodes with the caches. No model math lives here.

#include "transcribe_command.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <functional>

#include "attention_map.h"
#include "output_files.h"
#include "text_values.h"
#include "xattn/audio.h"
#include "xattn/error.h"
#include "xattn/log_mel.h"
#include "xattn/models/speech.h"
#include "xattn/runtime.h"

namespace xattn::cli {
namespace {

constexpr double kMaxSeconds = 120.0;  // the model was trained on utterances of a few seconds

double ms_of(const std::function<void()>& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

CLI::App* add_transcribe_command(CLI::App& app, TranscribeOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "transcribe", "Transcribe speech with the speech recogniser (examples/speech): prints the "
                    "text, then the time spent on the features, the encoder and the decoder.");
  cmd->add_option("audio", o.audio, "the audio file (WAV, FLAC, OGG, ...; any rate, mixed to mono)")
      ->required()
      ->type_name("FILE");
  cmd->add_option("--model", o.model, "the checkpoint (default: the shipped one)")
      ->type_name("MODEL.safetensors");
  cmd->add_option("--beams", o.beams, "beam search width; 1 decodes greedily (default 1)")
      ->type_name("N");
  cmd->add_option("--max-tokens", o.max_tokens, "the longest transcript, in characters")
      ->type_name("N");
  cmd->add_option("--attention-map", o.attention_map,
                  "write the cross-attention map (words x seconds) as a PNG picture")
      ->type_name("OUT.png");
  cmd->add_option("--threads", o.threads, "threads (default: all)")->type_name("N");
  return cmd;
}

void transcribe_command(const TranscribeOptions& o, std::ostream& out) {
  if (!o.threads.empty()) set_default_num_threads(parse_threads(o.threads));
  if (o.beams < 1 || o.beams > 64) throw Error("--beams: must be 1 to 64, got " + std::to_string(o.beams));
  if (!o.attention_map.empty()) check_writable("--attention-map", o.attention_map);
  const std::string model_path = o.model.empty() ? XATTN_SPEECH_MODEL : o.model;
  const auto model = models::SpeechRecognizer::load(model_path);
  audio::LogMelConfig features_config;
  features_config.n_mels = model.config().n_mels;

  audio::Audio sound;
  std::vector<float> features;
  nn::Tensor encoded;
  models::Transcript transcript;
  const double front_ms = ms_of([&] {
    sound = audio::load_audio(o.audio, features_config.sample_rate, kMaxSeconds);
    features = audio::log_mel(sound.samples, features_config);
  });
  const int64_t frames = static_cast<int64_t>(features.size()) / features_config.n_mels;
  const double encoder_ms = ms_of([&] {
    encoded = model.encode(view(features.data(), {frames, features_config.n_mels}));
  });
  const double decoder_ms =
      ms_of([&] { transcript = model.transcribe(encoded, o.beams, o.max_tokens); });
  if (!o.attention_map.empty()) {
    const double seconds_per_frame =
        static_cast<double>(models::SpeechRecognizer::kFeatureFramesPerAudioFrame * features_config.hop) /
        static_cast<double>(features_config.sample_rate);
    write_attention_map_png(o.attention_map, word_attention_map(transcript, seconds_per_frame));
  }
  const double total_s = (front_ms + encoder_ms + decoder_ms) / 1000;
  out << transcript.text << "\n";
  out << "audio " << sound.seconds() << " s; features " << front_ms << " ms, encoder "
      << encoder_ms << " ms, decoder " << decoder_ms << " ms (" << transcript.tokens.size() + 1
      << " steps, " << o.beams << (o.beams == 1 ? " beam" : " beams") << "); "
      << sound.seconds() / total_s << "x real time\n";
}

}  // namespace xattn::cli
