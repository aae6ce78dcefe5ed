#pragma once
// The picture `xattn transcribe --attention-map` writes: where in the audio each word of the
// transcript was read from (the decoder's cross-attention), words down, seconds across.

#include <cstdint>
#include <string>
#include <vector>

#include "xattn/models/speech.h"

namespace xattn::cli {

struct AttentionMap {
  std::string title;
  std::vector<std::string> rows;  // a label for each row
  std::vector<float> weights;     // [rows.size(), columns]
  int64_t columns = 0;
  double seconds_per_column = 0;
};

// One row per word of the transcript: the mean of its characters' cross-attention rows.
AttentionMap word_attention_map(const models::Transcript& transcript, double seconds_per_frame);

// Draws `map` (each row scaled to its own peak, viridis colours) with the labels, a time axis
// in seconds and the title, and writes it as a PNG (all or nothing).
void write_attention_map_png(const std::string& path, const AttentionMap& map);

}  // namespace xattn::cli
