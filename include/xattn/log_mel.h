#pragma once
// The speech models' input features: a log-mel spectrogram, computed with FFTW. Training (through
// the Python module) and inference use this one implementation, so they see identical features.

#include <cstdint>
#include <span>
#include <vector>

namespace xattn::audio {

struct LogMelConfig {
  int64_t sample_rate = 16000;
  int64_t n_fft = 400;  // the window: 25 ms at 16 kHz
  int64_t hop = 160;    // 10 ms
  int64_t n_mels = 80;
  double f_min = 0.0, f_max = 8000.0;
};

// Throws xattn::Error naming the field that is out of range (sizes >= 1, hop <= n_fft,
// 0 <= f_min < f_max <= sample_rate / 2).
void check(const LogMelConfig& config);

// The triangular mel filters [n_mels, n_fft / 2 + 1], row-major: on the HTK mel scale
// m(f) = 2595·log10(1 + f / 700), n_mels + 2 points equally spaced in m from f_min to f_max,
// filter i rising from point i to 1 at point i + 1 and falling to 0 at point i + 2, evaluated at
// the FFT bin frequencies k·sample_rate / n_fft.
std::vector<float> mel_filters(const LogMelConfig& config);

// The log-mel spectrogram of `samples` (at config.sample_rate), [frames, n_mels] row-major with
// frames = 1 + n / hop (n samples):
//   frame t is samples [t·hop − n_fft/2, t·hop + n_fft/2) of the signal reflected at both ends
//   (torch.stft's center=True), times a periodic Hann window; its power spectrum |rfft|² through
//   the mel filters; then log10(max(·, 1e-10)), floored at the utterance's maximum − 8, and
//   mapped by (x + 4) / 4 (Whisper's recipe: values of a few units around 0).
// Needs n > n_fft / 2 (the reflection); throws xattn::Error otherwise or for a bad config.
std::vector<float> log_mel(std::span<const float> samples, const LogMelConfig& config = {});

// The number of frames log_mel gives for n samples.
inline int64_t log_mel_frames(int64_t n, const LogMelConfig& config) { return 1 + n / config.hop; }

}  // namespace xattn::audio
