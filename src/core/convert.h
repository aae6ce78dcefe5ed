#pragma once
// Scalar element access for any dtype, for the few places that touch O(rows) data rather than
// O(rows·keys): storing results, reading mask rows, merging partial results.

#include <algorithm>
#include <cstdint>

#include "xattn/half.h"
#include "xattn/tensor.h"

namespace xattn::core {

inline float load_element(const void* base, DType t, int64_t index) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(base)[index];
    case DType::kF16: return f16_to_float(static_cast<const uint16_t*>(base)[index]);
    case DType::kBF16: return bf16_to_float(static_cast<const uint16_t*>(base)[index]);
    case DType::kBool: return static_cast<const uint8_t*>(base)[index] ? 1.0f : 0.0f;
  }
  return 0.0f;
}

// dst[i·stride] = src[i] for i < n, converted to `t` (round to nearest even).
inline void store_row(const float* src, int64_t n, void* dst, DType t, int64_t stride) {
  switch (t) {
    case DType::kF32:
      if (stride == 1) {
        std::copy_n(src, n, static_cast<float*>(dst));
        break;
      }
      for (int64_t i = 0; i < n; ++i) static_cast<float*>(dst)[i * stride] = src[i];
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i * stride] = float_to_f16(src[i]);
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i)
        static_cast<uint16_t*>(dst)[i * stride] = float_to_bf16(src[i]);
      break;
    case DType::kBool:
      break;  // never an output dtype; validation refuses it
  }
}

// A dense-mask row segment as additive values: bool false -> -inf, true -> 0; floats as given.
inline void load_mask_row(const void* base, DType t, int64_t stride, int64_t n, float* dst) {
  if (t == DType::kBool) {
    const auto* m = static_cast<const uint8_t*>(base);
    for (int64_t i = 0; i < n; ++i) dst[i] = m[i * stride] ? 0.0f : -__builtin_inff();
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = load_element(base, t, i * stride);
}

// Pointer to element `offset` of a view of dtype `t`.
inline const void* element_ptr(const void* base, DType t, int64_t offset) {
  return static_cast<const char*>(base) + offset * dtype_size(t);
}
inline void* element_ptr(void* base, DType t, int64_t offset) {
  return static_cast<char*>(base) + offset * dtype_size(t);
}

}  // namespace xattn::core
