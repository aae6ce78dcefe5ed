#pragma once
// The `run` command's options as typed, and their translation into AttentionParams. Also the
// reverse direction for messages: library errors are reworded to name the option, not the C++
// argument.

#include <cstdint>
#include <string>
#include <vector>

#include "output_files.h"
#include "xattn/attention.h"
#include "xattn/npy.h"
#include "xattn/params.h"

namespace xattn::cli {

// Everything arrives as text and is parsed by us, so every bad value gets a message in one style
// that names its option. An empty string means "not given".
struct RunOptions {
  std::string q, k, v, mask;
  bool causal = false;
  std::string align, window, scale, softcap, kv_lens, q_lens, threads;
  OutputPaths outputs;
};

// Owns what AttentionParams' spans and mask view point into. Not copyable or movable, so those
// pointers stay valid: build it in place with parse_params.
struct ParsedParams {
  ParsedParams() = default;
  ParsedParams(const ParsedParams&) = delete;
  ParsedParams& operator=(const ParsedParams&) = delete;

  AttentionParams params;
  std::vector<int64_t> kv_lens, q_lens;
  NpyArray mask;
};

// Throws xattn::Error naming the option for a malformed value; reads the --mask file.
void parse_params(const RunOptions& options, ParsedParams& parsed);

// read_npy with the option prefixed to its message: "--q: Q.npy: cannot open: ...".
NpyArray load_npy(const std::string& option, const std::string& path);

// xattn::attention, with its argument names in errors replaced by option names.
void call_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                    const AttentionParams& params, const AttentionOutputs& outputs);

}  // namespace xattn::cli
