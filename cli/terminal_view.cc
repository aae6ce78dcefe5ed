// Column layout is computed from display widths (code points, not bytes), so UTF-8 labels and
// the block characters line up.

#include "terminal_view.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace xattn::cli {
namespace {

size_t display_width(const std::string& s) {
  // Counts UTF-8 lead bytes; every character we print is one column wide.
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  }));
}

std::string pad_right(const std::string& s, size_t width) {
  const size_t w = display_width(s);
  return w >= width ? s : s + std::string(width - w, ' ');
}

std::string pad_left(const std::string& s, size_t width) {
  const size_t w = display_width(s);
  return w >= width ? s : std::string(width - w, ' ') + s;
}

std::string format_number(float x, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, static_cast<double>(x));
  return buf;
}

// Ends a line without the padding of its last cell.
void end_line(std::string& out) {
  while (!out.empty() && out.back() == ' ') out.pop_back();
  out += '\n';
}

size_t label_width(std::span<const std::string> labels) {
  size_t w = 0;
  for (const std::string& l : labels) w = std::max(w, display_width(l));
  return w;
}

// Five levels: a probability rounds to the nearest quarter.
const char* shade(float p) {
  static const char* const kShades[] = {" ", "░", "▒", "▓", "█"};
  if (!(p > 0.0f)) return kShades[0];  // also catches NaN
  const long level = std::lround(std::min(p, 1.0f) * 4.0f);
  return kShades[std::clamp(level, 0L, 4L)];
}

}  // namespace

std::string render_table(std::span<const std::string> row_labels,
                         std::span<const std::string> column_labels, std::span<const float> values,
                         int decimals) {
  const size_t rows = row_labels.size(), cols = column_labels.size();
  if (values.size() < rows * cols) return "(table data missing)\n";
  size_t cell = label_width(column_labels);
  for (float v : values.first(rows * cols)) cell = std::max(cell, format_number(v, decimals).size());
  const size_t left = label_width(row_labels);

  std::string out = std::string(left, ' ');
  for (const std::string& c : column_labels) out += "  " + pad_left(c, cell);
  end_line(out);
  for (size_t r = 0; r < rows; ++r) {
    out += pad_right(row_labels[r], left);
    for (size_t c = 0; c < cols; ++c) out += "  " + pad_left(format_number(values[r * cols + c], decimals), cell);
    end_line(out);
  }
  return out;
}

std::string render_heatmap(std::span<const std::string> row_labels,
                           std::span<const std::string> column_labels, std::span<const float> probs) {
  const size_t rows = row_labels.size(), cols = column_labels.size();
  if (probs.size() < rows * cols) return "(heatmap data missing)\n";
  constexpr size_t kCellWidth = 7;  // "▓▓ 0.82"
  const size_t cell = std::max(kCellWidth, label_width(column_labels));
  const size_t left = label_width(row_labels);

  std::string out = std::string(left, ' ');
  for (const std::string& c : column_labels) out += "  " + pad_right(c, cell);
  end_line(out);
  for (size_t r = 0; r < rows; ++r) {
    out += pad_right(row_labels[r], left);
    for (size_t c = 0; c < cols; ++c) {
      const float p = probs[r * cols + c];
      const std::string s = shade(p);
      out += "  " + pad_right(s + s + " " + format_number(p, 2), cell);
    }
    end_line(out);
  }
  return out;
}

}  // namespace xattn::cli
