#pragma once
// The built-in example: cross-attention from a short English sentence (queries) to its French
// translation (keys and values), with small hand-made embeddings.

#include <ostream>

#include "output_files.h"
#include "xattn/params.h"

namespace xattn::cli {

// Runs the example under `params` (so --causal, --window, --mask ... still apply), prints the
// tokens, the output and the attention map to `os`, and writes whichever outputs were requested.
void run_example(const AttentionParams& params, const OutputPaths& outputs, std::ostream& os);

}  // namespace xattn::cli
