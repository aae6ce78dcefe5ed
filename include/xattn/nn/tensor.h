#pragma once
// The layers' owned storage: a row-major f32 array with its shape. Weights and layer outputs are
// Tensors; inputs are plain views (xattn/tensor.h), so callers keep their own memory.

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "xattn/tensor.h"

namespace xattn::nn {

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled. Throws xattn::Error for a negative size, one whose element count overflows, or
  // one larger than the machine's memory (or whose allocation fails).
  explicit Tensor(std::vector<int64_t> shape);
  Tensor(std::initializer_list<int64_t> shape) : Tensor(std::vector<int64_t>(shape)) {}

  const std::vector<int64_t>& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t size(int dim) const { return shape_[dim]; }
  int64_t numel() const { return static_cast<int64_t>(data_.size()); }
  bool empty() const { return shape_.empty(); }

  // Null only for a default-constructed tensor, whose view is then "absent"; a tensor with a
  // shape but no elements (an empty sequence: no keys, say) is present, with non-null data.
  float* data();
  const float* data() const;

  // Views for the attention API (rank <= kMaxRank).
  TensorView view() const;
  MutableTensorView view();

 private:
  std::vector<int64_t> shape_;
  std::vector<float> data_;
};

}  // namespace xattn::nn
