// Shape checks and their messages.

#include "nn/shapes.h"

#include "xattn/error.h"

namespace xattn::nn {

std::string shape_string(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t d = 0; d < shape.size(); ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
  return s + "]";
}

std::string shape_string(const TensorView& x) {
  if (x.rank() < 0 || x.rank() > kMaxRank) return "of rank " + std::to_string(x.rank());
  return shape_string(std::span<const int64_t>(x.layout.shape.data(), x.rank()));
}

void expect_shape(const TensorView& x, std::span<const int64_t> shape, const std::string& name) {
  if (!x.present())
    throw Error(name + ": is required: expected shape " + shape_string(shape) + ", got none");
  bool same = x.rank() == static_cast<int>(shape.size());
  for (int d = 0; same && d < x.rank(); ++d) same = x.size(d) == shape[d];
  if (!same)
    throw Error(name + ": expected shape " + shape_string(shape) + ", got " + shape_string(x));
}

}  // namespace xattn::nn
