// Sequences, projections and head views for the layers.

#include "nn/heads.h"

#include <string>
#include <vector>

#include "nn/rows.h"
#include "xattn/error.h"

namespace xattn::nn {

TensorView batch_major(const TensorView& x, const char* name, bool batched, bool batch_first,
                       int64_t width) {
  const std::string arg(name);
  const int want = batched ? 3 : 2;
  if (!x.present()) throw Error(arg + ": is required");
  if (x.rank() != want)
    throw Error(arg + ": expected rank " + std::to_string(want) + " (" +
                (batched ? (batch_first ? "[N, L, width]" : "[L, N, width]") : "[L, width]") +
                "), got rank " + std::to_string(x.rank()));
  if (x.dtype == DType::kBool) throw Error(arg + ": must be a float dtype, got bool");
  for (int d = 0; d < want; ++d)
    if (x.size(d) < 0) throw Error(arg + ": dim " + std::to_string(d) + " is negative");
  if (x.size(want - 1) != width)
    throw Error(arg + ": last dim must be " + std::to_string(width) + ", got " +
                std::to_string(x.size(want - 1)));
  if (!batched)
    return {x.data, x.dtype, Layout::strided({1, x.size(0), width}, {0, x.stride(0), x.stride(1)})};
  if (batch_first) return x;
  return {x.data, x.dtype,
          Layout::strided({x.size(1), x.size(0), width}, {x.stride(1), x.stride(0), x.stride(2)})};
}

Tensor project(const Linear& proj, const TensorView& x) {
  std::vector<float> scratch;
  const RowsView rows = as_rows(x, "input", scratch);
  Tensor y({x.size(0), x.size(1), proj.out_features()});
  proj.forward(rows, {y.data(), rows.rows, proj.out_features(), proj.out_features()});
  return y;
}

TensorView heads(const float* rows, int64_t N, int64_t H, int64_t R, int64_t hd) {
  return {rows, DType::kF32, Layout::strided({N, H, R, hd}, {R * H * hd, hd, H * hd, 1})};
}

MutableTensorView heads(float* rows, int64_t N, int64_t H, int64_t R, int64_t hd) {
  const TensorView v = heads(static_cast<const float*>(rows), N, H, R, hd);
  return {rows, v.dtype, v.layout};
}

}  // namespace xattn::nn
