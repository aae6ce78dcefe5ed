// Layer inputs as row matrices, copied only when their strides are not a matrix's.

#include "nn/rows.h"

#include <array>
#include <string>

#include "core/convert.h"
#include "core/out_of_memory.h"
#include "core/validate.h"
#include "xattn/error.h"

namespace xattn::nn {

int64_t leading_count(const TensorView& x) {
  int64_t n = 1;
  for (int d = 0; d + 1 < x.rank(); ++d) n *= x.size(d);  // as_rows checked the product
  return n;
}

namespace {

// The row stride when x's leading dims walk one uniform stride (negative when they walk
// backwards, which as_rows copies too), else -1.
int64_t uniform_row_stride(const TensorView& x, int64_t width) {
  int64_t ld = width, expect = 0;
  bool first = true;  // (not expect < 0: a reversed dim makes ld and expect negative)
  for (int d = x.rank() - 2; d >= 0; --d) {
    if (x.size(d) == 1) continue;
    if (first) {
      first = false;
      ld = x.stride(d);
      expect = ld * x.size(d);
    } else {
      if (x.stride(d) != expect) return -1;
      expect *= x.size(d);
    }
  }
  return ld;
}

}  // namespace

RowsView as_rows(const TensorView& x, std::string_view arg, std::vector<float>& scratch) {
  const std::string name(arg);
  if (!x.present()) throw Error(name + ": is required");
  if (x.rank() < 1 || x.rank() > kMaxRank)
    throw Error(name + ": rank must be 1 to " + std::to_string(kMaxRank) + ", got " +
                std::to_string(x.rank()));
  if (x.dtype == DType::kBool) throw Error(name + ": must be float32, float16 or bfloat16, got bool");
  int64_t numel = 1;
  for (int d = 0; d < x.rank(); ++d) {
    if (x.size(d) < 0) throw Error(name + ": dim " + std::to_string(d) + " is negative");
    // Zero strides let a view claim more elements than memory holds: its size must still fit.
    if (__builtin_mul_overflow(numel, x.size(d), &numel) || numel > (int64_t{1} << 62))
      throw Error(name + ": sizes overflow 64-bit index arithmetic");
  }
  const int64_t width = x.size(x.rank() - 1), rows = leading_count(x);
  const int64_t ld = uniform_row_stride(x, width);
  if (x.dtype == DType::kF32 && (width <= 1 || x.stride(x.rank() - 1) == 1) && ld >= width)
    return {static_cast<const float*>(x.data), rows, width, ld};

  // Gather in row-major order of the (padded to rank 4) index space.
  core::check_memory(name.c_str(), numel, sizeof(float));
  core::translate_allocation_failure(name.c_str(),
                                     [&] { scratch.resize(static_cast<size_t>(numel)); });
  std::array<int64_t, kMaxRank> shape{1, 1, 1, 1}, stride{0, 0, 0, 0};
  const int pad = kMaxRank - x.rank();
  for (int d = 0; d < x.rank(); ++d) {
    shape[pad + d] = x.size(d);
    stride[pad + d] = x.stride(d);
  }
  float* out = scratch.data();
  for (int64_t a = 0; a < shape[0]; ++a)
    for (int64_t b = 0; b < shape[1]; ++b)
      for (int64_t c = 0; c < shape[2]; ++c) {
        const int64_t base = a * stride[0] + b * stride[1] + c * stride[2];
        for (int64_t e = 0; e < shape[3]; ++e)
          *out++ = core::load_element(x.data, x.dtype, base + e * stride[3]);
      }
  return {scratch.data(), rows, width, width};
}

}  // namespace xattn::nn
