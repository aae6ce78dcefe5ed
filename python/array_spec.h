#pragma once
// Arrays as the Python package (python/xattn/_arrays.py) describes them, turned into xattn views
// without copying, and the attention options object. Shared by every binding file.

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "xattn/xattn.h"

namespace xattn::python {

// An array as the Python side describes it, without copying: (address of element [0,...,0],
// dtype name, shape, strides in elements). The Python caller keeps the array alive.
using ArraySpec = std::tuple<std::uintptr_t, std::string, std::vector<int64_t>, std::vector<int64_t>>;
using OptionalArray = std::optional<ArraySpec>;

inline xattn::DType parse_dtype(const std::string& name, const std::string& arg) {
  if (name == "float32") return xattn::DType::kF32;
  if (name == "float16") return xattn::DType::kF16;
  if (name == "bfloat16") return xattn::DType::kBF16;
  if (name == "bool") return xattn::DType::kBool;
  throw xattn::Error(arg + ": unsupported dtype " + name);
}

inline xattn::Layout to_layout(const ArraySpec& spec, const std::string& arg) {
  const auto& [ptr, dtype, shape, strides] = spec;
  if (shape.size() != strides.size())
    throw xattn::Error(arg + ": shape and strides have different ranks");
  if (shape.size() > static_cast<size_t>(xattn::kMaxRank))
    throw xattn::Error(arg + ": rank " + std::to_string(shape.size()) + " exceeds the maximum of " +
                       std::to_string(xattn::kMaxRank));
  xattn::Layout layout;
  layout.rank = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    layout.shape[i] = shape[i];
    layout.strides[i] = strides[i];
  }
  return layout;
}

inline xattn::MutableTensorView to_mutable(const ArraySpec& spec, const std::string& arg) {
  const std::uintptr_t address = std::get<0>(spec);
  return {reinterpret_cast<void*>(address), parse_dtype(std::get<1>(spec), arg),
          to_layout(spec, arg)};
}

inline xattn::MutableTensorView to_mutable(const OptionalArray& spec, const std::string& arg) {
  return spec ? to_mutable(*spec, arg) : xattn::MutableTensorView{};  // absent: null data
}

inline xattn::TensorView to_view(const ArraySpec& spec, const std::string& arg) {
  return to_mutable(spec, arg);
}

inline xattn::TensorView to_view(const OptionalArray& spec, const std::string& arg) {
  return to_mutable(spec, arg);
}

// AttentionParams with storage for what it only points to (lengths, mask), so that one Python
// object carries every option. Filled field by field from Python.
struct Params {
  std::optional<float> scale;
  float softcap = 0.0f;
  bool causal = false;
  std::string align = "top_left";
  int64_t window_left = -1;
  int64_t window_right = -1;
  int64_t diagonal_offset = 0;
  std::vector<int64_t> kv_lens;
  std::vector<int64_t> q_lens;
  OptionalArray mask;
  bool bf16_probabilities = false;
  int num_threads = 0;

  // The returned value points into *this; it must not outlive it.
  xattn::AttentionParams view() const {
    xattn::AttentionParams p;
    p.scale = scale;
    p.softcap = softcap;
    p.causal = causal;
    if (align == "top_left") {
      p.align = xattn::CausalAlign::kTopLeft;
    } else if (align == "bottom_right") {
      p.align = xattn::CausalAlign::kBottomRight;
    } else {
      throw xattn::Error("align: must be 'top_left' or 'bottom_right', got '" + align + "'");
    }
    p.window = {window_left, window_right};
    p.diagonal_offset = diagonal_offset;
    p.kv_lens = kv_lens;
    p.q_lens = q_lens;
    p.mask = to_view(mask, "mask");
    p.bf16_probabilities = bf16_probabilities;
    p.num_threads = num_threads;
    return p;
  }
};

}  // namespace xattn::python
