// Audio files through libsndfile (every format it knows, any channel count), mixed down to mono,
// and sample-rate conversion through libsamplerate.

#include "xattn/audio.h"

#include <samplerate.h>
#include <sndfile.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "core/out_of_memory.h"
#include "io/file_io.h"
#include "xattn/error.h"

namespace xattn::audio {
namespace {

constexpr int64_t kMaxRate = 1'000'000;

struct CloseSndfile {
  void operator()(SNDFILE* f) const { sf_close(f); }
};

std::string seconds_text(double s) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", s);
  return text;
}

}  // namespace

Audio read_audio(const std::string& path, double max_seconds) {
  SF_INFO info{};
  const std::unique_ptr<SNDFILE, CloseSndfile> file(sf_open(path.c_str(), SFM_READ, &info));
  if (!file) io::fail(path, std::string("not an audio file libsndfile can read (") +
                                sf_strerror(nullptr) + ")");
  if (info.samplerate < 1 || info.samplerate > kMaxRate || info.channels < 1)
    io::fail(path, "unsupported sample rate " + std::to_string(info.samplerate) + " Hz or " +
                       std::to_string(info.channels) + " channels");
  if (info.frames <= 0) io::fail(path, "holds no samples");
  const double seconds = double(info.frames) / info.samplerate;
  if (!(seconds <= max_seconds))
    io::fail(path, "is " + seconds_text(seconds) + " s long, more than the " +
                       seconds_text(max_seconds) + " s allowed");
  Audio audio;
  audio.sample_rate = info.samplerate;
  core::translate_allocation_failure(path.c_str(), [&] {
    std::vector<float> interleaved(static_cast<size_t>(info.frames) * info.channels);
    const sf_count_t got = sf_readf_float(file.get(), interleaved.data(), info.frames);
    if (got <= 0) io::fail(path, std::string("could not read its samples (") +
                                     sf_strerror(file.get()) + ")");
    audio.samples.resize(static_cast<size_t>(got));
    for (sf_count_t i = 0; i < got; ++i) {
      double sum = 0;
      for (int c = 0; c < info.channels; ++c) sum += interleaved[i * info.channels + c];
      audio.samples[i] = static_cast<float>(sum / info.channels);
    }
  });
  return audio;
}

std::vector<float> resample(std::span<const float> samples, int64_t from_rate, int64_t to_rate) {
  for (const auto& [rate, name] : {std::pair{from_rate, "from_rate"}, {to_rate, "to_rate"}})
    if (rate < 1 || rate > kMaxRate)
      throw Error(std::string(name) + ": must be 1 to " + std::to_string(kMaxRate) + " Hz, got " +
                  std::to_string(rate));
  if (from_rate == to_rate) return {samples.begin(), samples.end()};
  const double ratio = double(to_rate) / double(from_rate);
  if (!src_is_valid_ratio(ratio))
    throw Error("to_rate: " + std::to_string(to_rate) + " Hz from " + std::to_string(from_rate) +
                " Hz is a ratio beyond libsamplerate's 256");
  std::vector<float> out(static_cast<size_t>(std::ceil(double(samples.size()) * ratio)) + 1);
  if (samples.empty()) return {};
  SRC_DATA data{};
  data.data_in = samples.data();
  data.input_frames = static_cast<long>(samples.size());
  data.data_out = out.data();
  data.output_frames = static_cast<long>(out.size());
  data.src_ratio = ratio;
  if (const int err = src_simple(&data, SRC_SINC_BEST_QUALITY, 1))
    throw Error(std::string("resample: ") + src_strerror(err));
  out.resize(static_cast<size_t>(data.output_frames_gen));
  return out;
}

Audio load_audio(const std::string& path, int64_t sample_rate, double max_seconds) {
  Audio audio = read_audio(path, max_seconds);
  audio.samples = resample(audio.samples, audio.sample_rate, sample_rate);
  audio.sample_rate = sample_rate;
  return audio;
}

}  // namespace xattn::audio
