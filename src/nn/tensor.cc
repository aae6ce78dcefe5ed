// The owned f32 tensor of the layers.

#include "xattn/nn/tensor.h"

#include <string>

#include "core/out_of_memory.h"
#include "core/validate.h"
#include "xattn/error.h"

namespace xattn::nn {

namespace {

int64_t checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (const int64_t s : shape) {
    if (s < 0) throw Error("Tensor: size " + std::to_string(s) + " is negative");
    if (s != 0 && n > INT64_MAX / static_cast<int64_t>(sizeof(float)) / s)
      throw Error("Tensor: the element count overflows");
    n *= s;
  }
  return n;
}

Layout layout_of(const std::vector<int64_t>& shape) {
  if (shape.size() > static_cast<size_t>(kMaxRank))
    throw Error("Tensor: a view of rank " + std::to_string(shape.size()) + " exceeds " +
                std::to_string(kMaxRank));
  Layout l;
  l.rank = static_cast<int>(shape.size());
  int64_t stride = 1;
  for (int i = l.rank - 1; i >= 0; --i) {
    l.shape[i] = shape[i];
    l.strides[i] = stride;
    stride *= shape[i];
  }
  return l;
}

}  // namespace

Tensor::Tensor(std::vector<int64_t> shape) : shape_(std::move(shape)) {
  const int64_t n = checked_numel(shape_);
  core::check_memory("Tensor", n, sizeof(float));
  core::translate_allocation_failure("Tensor", [&] { data_.assign(static_cast<size_t>(n), 0.0f); });
}

float* Tensor::data() {
  static float no_elements = 0.0f;  // never written through: the tensor has no elements
  if (shape_.empty()) return data_.data();  // null for a default-constructed (absent) tensor
  return data_.empty() ? &no_elements : data_.data();
}
const float* Tensor::data() const { return const_cast<Tensor*>(this)->data(); }

TensorView Tensor::view() const { return {data(), DType::kF32, layout_of(shape_)}; }
MutableTensorView Tensor::view() { return {data(), DType::kF32, layout_of(shape_)}; }

}  // namespace xattn::nn
