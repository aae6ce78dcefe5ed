#include "attention_map.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "picture.h"

namespace xattn::cli {
namespace {

// Matplotlib's viridis at 0, 1/4, 1/2, 3/4 and 1, interpolated linearly between: dark blue for
// little attention to yellow for the most, readable in grey and by colour-blind readers.
Rgb viridis(float t) {
  static constexpr Rgb kStops[] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98},
                                   {253, 231, 37}};
  t = std::clamp(t, 0.0f, 1.0f) * 4;
  const int i = std::min(3, static_cast<int>(t));
  const float f = t - static_cast<float>(i);
  const auto mix = [f](uint8_t a, uint8_t b) {
    return static_cast<uint8_t>(std::lround(a + (b - a) * f));
  };
  return {mix(kStops[i].r, kStops[i + 1].r), mix(kStops[i].g, kStops[i + 1].g),
          mix(kStops[i].b, kStops[i + 1].b)};
}

// A tick spacing in seconds that leaves at least min_pixels between the labels.
double tick_seconds(double pixels_per_second, int min_pixels) {
  for (const double step : {0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0}) {
    if (step * pixels_per_second >= min_pixels) return step;
  }
  return 120.0;
}

std::string seconds_label(double s) {
  char text[32];
  std::snprintf(text, sizeof text, s == std::floor(s) ? "%.0f" : "%.1f", s);
  return text;
}

}  // namespace

AttentionMap word_attention_map(const models::Transcript& transcript, double seconds_per_frame) {
  AttentionMap map;
  map.title = "heard: \"" + transcript.text + "\"";
  map.columns = transcript.audio_frames;
  map.seconds_per_column = seconds_per_frame;
  const size_t frames = static_cast<size_t>(transcript.audio_frames);
  std::vector<float> sum(frames, 0.0f);
  int count = 0;
  std::string word;
  const auto end_word = [&] {
    if (count == 0) return;
    map.rows.push_back(word);
    for (float& s : sum) map.weights.push_back(s / static_cast<float>(count)), s = 0;
    word.clear(), count = 0;
  };
  for (size_t i = 0; i < transcript.tokens.size(); ++i) {
    const int64_t t = transcript.tokens[i];
    if (t < 2) continue;  // SOT/EOT are not characters
    const char c = models::kSpeechChars[t - 2];
    if (c == ' ') {
      end_word();
      continue;
    }
    word += c, ++count;
    const float* row = transcript.cross_attention.data() + i * frames;
    for (size_t f = 0; f < frames; ++f) sum[f] += row[f];
  }
  end_word();
  return map;
}

void write_attention_map_png(const std::string& path, const AttentionMap& map) {
  constexpr int kRowHeight = 28, kPad = 12, kTitleHeight = 40, kAxisHeight = 48;
  const int columns = static_cast<int>(std::max<int64_t>(1, map.columns));
  const int column_px = std::clamp(1000 / columns, 2, 8);
  const int rows = static_cast<int>(std::max<size_t>(1, map.rows.size()));

  Picture probe(1, 1, {});  // measures the labels before the picture's size is known
  int label_width = probe.text_width("seconds");
  for (const std::string& r : map.rows) label_width = std::max(label_width, probe.text_width(r));
  const int left = kPad + label_width + kPad, top = kTitleHeight;
  const int plot_w = columns * column_px, plot_h = rows * kRowHeight;
  Picture picture(std::max(left + plot_w + kPad, kPad * 2 + probe.text_width(map.title)),
                  top + plot_h + kAxisHeight, {255, 255, 255});
  const Rgb ink{0, 0, 0};

  picture.set_font_size(16);
  picture.text(kPad, kPad + picture.ascent(), map.title, ink);
  picture.set_font_size(14);
  for (size_t r = 0; r < map.rows.size(); ++r) {
    const float* w = map.weights.data() + r * static_cast<size_t>(map.columns);
    const float peak = std::max(*std::max_element(w, w + map.columns), 1e-30f);
    const int y = top + static_cast<int>(r) * kRowHeight;
    for (int c = 0; c < map.columns; ++c) {
      picture.fill(left + c * column_px, y, column_px, kRowHeight, viridis(w[c] / peak));
    }
    const std::string& label = map.rows[r];
    picture.text(left - kPad - picture.text_width(label), y + (kRowHeight + picture.ascent()) / 2 - 2,
                 label, ink);
  }
  // The time axis: a tick and its label every `step` seconds.
  const double px_per_s = column_px / map.seconds_per_column;
  const double step = tick_seconds(px_per_s, 48);
  const int axis_y = top + plot_h;
  picture.fill(left, axis_y, plot_w, 1, ink);
  for (int k = 0; k * step * px_per_s <= plot_w; ++k) {
    const int x = left + static_cast<int>(std::lround(k * step * px_per_s));
    picture.fill(x, axis_y, 1, 5, ink);
    const std::string label = seconds_label(k * step);
    picture.text(x - picture.text_width(label) / 2, axis_y + 8 + picture.ascent(), label, ink);
  }
  picture.text(kPad, axis_y + 8 + picture.ascent(), "seconds", ink);
  picture.save_png(path);
}

}  // namespace xattn::cli
