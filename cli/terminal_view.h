#pragma once
// Plain-text renderings of small matrices for a terminal: a labelled number table and a
// heatmap of probabilities shaded with Unicode blocks.

#include <cstdint>
#include <span>
#include <string>

namespace xattn::cli {

// `values` is row-major [row_labels.size(), column_labels.size()].
std::string render_table(std::span<const std::string> row_labels,
                         std::span<const std::string> column_labels, std::span<const float> values,
                         int decimals);

// Each cell is a shade from " ░▒▓█" (by probability) followed by the probability, e.g. "▓▓ 0.82".
std::string render_heatmap(std::span<const std::string> row_labels,
                           std::span<const std::string> column_labels, std::span<const float> probs);

}  // namespace xattn::cli
