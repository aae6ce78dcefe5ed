// The log-mel spectrogram: framing with reflection at the ends, a periodic Hann window, FFTW's
// real-to-complex transform, the mel filters, and Whisper's log compression.

#include "xattn/log_mel.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <numbers>
#include <string>

#include "core/out_of_memory.h"
#include "xattn/error.h"

namespace xattn::audio {
namespace {

double hz_to_mel(double f) { return 2595.0 * std::log10(1.0 + f / 700.0); }
double mel_to_hz(double m) { return 700.0 * (std::pow(10.0, m / 2595.0) - 1.0); }

// FFTW's planner is not thread-safe (executing a plan is): plans are made and destroyed under
// one lock. One plan of the transform's size serves one call, on buffers from fftwf_malloc, which
// have the alignment the plan was made for.
std::mutex& planner_mutex() {
  static std::mutex m;
  return m;
}

struct FftwFree {
  void operator()(void* p) const { fftwf_free(p); }
};

class RealFft {
 public:
  explicit RealFft(int64_t n)
      : in_(static_cast<float*>(fftwf_malloc(sizeof(float) * n))),
        out_(static_cast<fftwf_complex*>(fftwf_malloc(sizeof(fftwf_complex) * (n / 2 + 1)))) {
    if (!in_ || !out_) throw std::bad_alloc();
    std::lock_guard<std::mutex> lock(planner_mutex());
    plan_ = fftwf_plan_dft_r2c_1d(static_cast<int>(n), in_.get(), out_.get(), FFTW_ESTIMATE);
    if (!plan_) throw Error("log_mel: FFTW could not plan a transform of " + std::to_string(n));
  }
  RealFft(const RealFft&) = delete;
  RealFft& operator=(const RealFft&) = delete;
  ~RealFft() {
    std::lock_guard<std::mutex> lock(planner_mutex());
    fftwf_destroy_plan(plan_);
  }
  float* input() { return in_.get(); }
  const fftwf_complex* output() const { return out_.get(); }
  void run() { fftwf_execute(plan_); }

 private:
  std::unique_ptr<float, FftwFree> in_;
  std::unique_ptr<fftwf_complex, FftwFree> out_;
  fftwf_plan plan_ = nullptr;
};

}  // namespace

void check(const LogMelConfig& c) {
  const auto positive = [](int64_t v, const char* name) {
    if (v < 1 || v > (int64_t{1} << 24))
      throw Error(std::string(name) + ": must be 1 to 2^24, got " + std::to_string(v));
  };
  positive(c.sample_rate, "sample_rate");
  positive(c.n_fft, "n_fft");
  positive(c.hop, "hop");
  positive(c.n_mels, "n_mels");
  if (c.hop > c.n_fft)
    throw Error("hop: must be at most n_fft = " + std::to_string(c.n_fft) + ", got " +
                std::to_string(c.hop));
  if (!(c.f_min >= 0 && c.f_min < c.f_max && c.f_max <= c.sample_rate / 2.0))
    throw Error("f_min, f_max: need 0 <= f_min < f_max <= sample_rate / 2 = " +
                std::to_string(c.sample_rate / 2.0) + ", got " + std::to_string(c.f_min) + ", " +
                std::to_string(c.f_max));
}

std::vector<float> mel_filters(const LogMelConfig& c) {
  check(c);
  const int64_t bins = c.n_fft / 2 + 1, M = c.n_mels;
  std::vector<double> points(M + 2);
  const double lo = hz_to_mel(c.f_min), hi = hz_to_mel(c.f_max);
  for (int64_t i = 0; i < M + 2; ++i) points[i] = mel_to_hz(lo + (hi - lo) * i / (M + 1));
  std::vector<float> filters(M * bins, 0.0f);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < bins; ++k) {
      const double f = double(k) * c.sample_rate / c.n_fft;
      const double rise = (f - points[m]) / (points[m + 1] - points[m]);
      const double fall = (points[m + 2] - f) / (points[m + 2] - points[m + 1]);
      filters[m * bins + k] = static_cast<float>(std::max(0.0, std::min(rise, fall)));
    }
  return filters;
}

std::vector<float> log_mel(std::span<const float> samples, const LogMelConfig& c) {
  check(c);
  const int64_t n = static_cast<int64_t>(samples.size()), pad = c.n_fft / 2;
  if (n <= pad)
    throw Error("samples: need more than n_fft / 2 = " + std::to_string(pad) + " of them (" +
                std::to_string(pad * 1000.0 / c.sample_rate) + " ms), got " + std::to_string(n));
  return core::translate_allocation_failure("log_mel", [&] {
    const int64_t frames = log_mel_frames(n, c), bins = c.n_fft / 2 + 1, M = c.n_mels;
    const std::vector<float> filters = mel_filters(c);
    std::vector<float> window(c.n_fft), power(bins), out(frames * M);
    for (int64_t i = 0; i < c.n_fft; ++i)
      window[i] = static_cast<float>(0.5 - 0.5 * std::cos(2 * std::numbers::pi * i / c.n_fft));
    RealFft fft(c.n_fft);
    float top = -__builtin_inff();
    for (int64_t t = 0; t < frames; ++t) {
      float* in = fft.input();
      for (int64_t i = 0; i < c.n_fft; ++i) {
        int64_t j = t * c.hop - pad + i;  // reflected at both ends (n > pad keeps it in range)
        if (j < 0) j = -j;
        if (j >= n) j = 2 * (n - 1) - j;
        in[i] = samples[j] * window[i];
      }
      fft.run();
      for (int64_t k = 0; k < bins; ++k) {
        const float re = fft.output()[k][0], im = fft.output()[k][1];
        power[k] = re * re + im * im;
      }
      for (int64_t m = 0; m < M; ++m) {
        double mel = 0;
        for (int64_t k = 0; k < bins; ++k) mel += double(filters[m * bins + k]) * power[k];
        const float x = static_cast<float>(std::log10(std::max(mel, 1e-10)));
        out[t * M + m] = x;
        top = std::max(top, x);
      }
    }
    for (float& x : out) x = (std::max(x, top - 8.0f) + 4.0f) / 4.0f;
    return out;
  });
}

}  // namespace xattn::audio
