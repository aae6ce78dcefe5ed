// Layout constructors and dtype names for the public tensor view types.

#include "xattn/tensor.h"

#include <string>

#include "xattn/error.h"

namespace xattn {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "float32";
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
    case DType::kBool: return "bool";
  }
  return "unknown";
}

Layout Layout::contiguous(std::initializer_list<int64_t> shape) {
  if (shape.size() > static_cast<size_t>(kMaxRank)) {
    throw Error("Layout::contiguous: rank " + std::to_string(shape.size()) + " exceeds " +
                std::to_string(kMaxRank));
  }
  Layout l;
  l.rank = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) l.shape[i++] = s;
  // Row-major: the last dim is densest. The running product wraps only for shapes whose numel
  // overflows anyway, which validation at the API boundary rejects.
  int64_t stride = 1;
  for (int d = l.rank - 1; d >= 0; --d) {
    l.strides[d] = stride;
    stride = static_cast<int64_t>(static_cast<uint64_t>(stride) * static_cast<uint64_t>(l.shape[d]));
  }
  return l;
}

Layout Layout::strided(std::initializer_list<int64_t> shape, std::initializer_list<int64_t> strides) {
  if (shape.size() != strides.size()) {
    throw Error("Layout::strided: " + std::to_string(shape.size()) + " dims but " +
                std::to_string(strides.size()) + " strides");
  }
  Layout l = contiguous(shape);
  int i = 0;
  for (int64_t s : strides) l.strides[i++] = s;
  return l;
}

int64_t Layout::numel() const {
  int64_t n = 1;
  for (int d = 0; d < rank; ++d) n *= shape[d];
  return n;
}

}  // namespace xattn
