#pragma once
// Writes a command's output .npy files all together: each is staged beside its target first and
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

}  // namespace xattn::cli
