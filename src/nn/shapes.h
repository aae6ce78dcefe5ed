#pragma once
// Shape checks and the messages they give, shared by the layers.

#include <cstdint>
#include <span>
#include <string>

#include "xattn/tensor.h"

namespace xattn::nn {

// "[2, 3, 5]"
std::string shape_string(std::span<const int64_t> shape);
std::string shape_string(const TensorView& x);

// Throws xattn::Error "<name>: expected shape [..], got [..]" unless x has exactly `shape`
// ("got none" when x is absent).
void expect_shape(const TensorView& x, std::span<const int64_t> shape, const std::string& name);
inline void expect_shape(const TensorView& x, std::initializer_list<int64_t> shape,
                         const std::string& name) {
  expect_shape(x, std::span<const int64_t>(shape.begin(), shape.size()), name);
}

}  // namespace xattn::nn
