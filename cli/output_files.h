#pragma once
// Writes a command's output files all or nothing: each is staged beside its target first and
// only renamed into place once every one of them was written, so a failure leaves every target
// as it was.

#include <cstdint>
#include <string>
#include <vector>

#include "xattn/tensor.h"

namespace xattn::cli {

// The output paths a run may write; empty means "not requested".
struct OutputPaths {
  std::string out;      // -o
  std::string lse;      // --lse
  std::string weights;  // --weights
};

struct OutputFile {
  std::string option;  // for messages, e.g. "-o"
  std::string path;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Throws xattn::Error naming the option when two requested outputs share a path or a target is
// a directory. Called before any computation so that mistakes cost nothing.
void check_output_paths(const OutputPaths& paths);

// All-or-nothing write of `files` (in order).
void write_outputs(const std::vector<OutputFile>& files);

// Throws xattn::Error naming `option` unless a file can be written at `path`: it is not a
// directory and a staging file can be created beside it (that probe is removed at once). For
// commands that compute for a while before writing, so a typo in a path costs nothing.
void check_writable(const std::string& option, const std::string& path);

// Writes `text` to `path` through a staging file renamed into place: `path` ends up either
// complete or as it was. Throws xattn::Error "<option>: <path>: cannot write: <reason>".
void write_text_output(const std::string& option, const std::string& path, const std::string& text);

}  // namespace xattn::cli
