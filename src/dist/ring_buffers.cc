#include "dist/ring_buffers.h"

#include <cstring>

#include "xattn/half.h"

namespace xattn::dist {

MutableTensorView dense_view(void* data, DType dtype, int64_t d0, int64_t d1, int64_t d2,
                             int64_t d3) {
  return {data, dtype, Layout::strided({d0, d1, d2, d3}, {d1 * d2 * d3, d2 * d3, d3, 1})};
}

void pack(const TensorView& src, void* dst) {
  const int64_t es = dtype_size(src.dtype);
  const auto& n = src.layout.shape;
  const auto& s = src.layout.strides;
  const char* base = static_cast<const char*>(src.data);
  char* out = static_cast<char*>(dst);
  for (int64_t a = 0; a < n[0]; ++a)
    for (int64_t b = 0; b < n[1]; ++b)
      for (int64_t c = 0; c < n[2]; ++c) {
        const char* row = base + (a * s[0] + b * s[1] + c * s[2]) * es;
        if (s[3] == 1) {
          std::memcpy(out, row, n[3] * es);
          out += n[3] * es;
        } else {
          for (int64_t d = 0; d < n[3]; ++d, out += es) std::memcpy(out, row + d * s[3] * es, es);
        }
      }
}

void store(const float* src, const MutableTensorView& dst) {
  const auto& n = dst.layout.shape;
  const auto& s = dst.layout.strides;
  for (int64_t a = 0; a < n[0]; ++a)
    for (int64_t b = 0; b < n[1]; ++b)
      for (int64_t c = 0; c < n[2]; ++c)
        for (int64_t d = 0; d < n[3]; ++d) {
          const float x = *src++;
          const int64_t at = a * s[0] + b * s[1] + c * s[2] + d * s[3];
          if (dst.dtype == DType::kF32) static_cast<float*>(dst.data)[at] = x;
          else if (dst.dtype == DType::kBF16) static_cast<uint16_t*>(dst.data)[at] = float_to_bf16(x);
          else static_cast<uint16_t*>(dst.data)[at] = float_to_f16(x);
        }
}

void add_rows(float* acc, int64_t d0, int64_t d1, int64_t rows, int64_t width, int64_t first,
              int64_t count, const float* part) {
  for (int64_t ab = 0; ab < d0 * d1; ++ab) {
    float* to = acc + (ab * rows + first) * width;
    const float* from = part + ab * count * width;
    for (int64_t i = 0; i < count * width; ++i) to[i] += from[i];
  }
}

}  // namespace xattn::dist
