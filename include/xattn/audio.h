#pragma once
// Audio files for the speech models: read with libsndfile (WAV, FLAC, OGG, ...), mixed down to
// one channel, and resampled to a model's rate with libsamplerate.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace xattn::audio {

// One channel of samples in [-1, 1] at sample_rate Hz.
struct Audio {
  std::vector<float> samples;
  int64_t sample_rate = 0;

  double seconds() const { return sample_rate ? double(samples.size()) / double(sample_rate) : 0; }
};

// Reads any file libsndfile reads; several channels are averaged into one. Throws xattn::Error
// naming the file when it is missing, not audio libsndfile knows, holds no samples, or is longer
// than max_seconds (a guard against files that would not fit in memory).
Audio read_audio(const std::string& path, double max_seconds = 600.0);

// The samples converted from `from_rate` to `to_rate` Hz by libsamplerate's best sinc converter
// (a copy when the rates agree). Rates must be 1 Hz to 1 MHz, their ratio within libsamplerate's
// 256. Throws xattn::Error naming the rate that is out of range.
std::vector<float> resample(std::span<const float> samples, int64_t from_rate, int64_t to_rate);

// read_audio, then resample to `sample_rate`.
Audio load_audio(const std::string& path, int64_t sample_rate, double max_seconds = 600.0);

}  // namespace xattn::audio
