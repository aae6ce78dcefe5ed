#pragma once
// NumPy .npy files: read (f32, f16, bool; C or Fortran order) and write (C order).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xattn/tensor.h"

namespace xattn {

struct NpyArray {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  bool fortran_order = false;
  std::vector<std::byte> bytes;

  int64_t numel() const;
  // A view of the data in its logical (row-major index) order; Fortran order gives reversed
  // strides, never a copy. Rank must be <= kMaxRank.
  TensorView view() const;
};

// Throws xattn::Error naming the file and what is wrong for a missing, malformed or truncated
// file, an unsupported dtype or byte order, or a rank above kMaxRank.
NpyArray read_npy(const std::string& path);

// Writes `data` (C order, `shape`; f32, f16 or bool) as a v1.0 file with the data 64-byte
// aligned. It goes to a temporary file beside `path` that is then renamed into place, so `path`
// is either untouched or complete. Throws xattn::Error naming `path` when the write fails, the
// dtype is bf16 (numpy has none) or the shape is negative or overflows.
void write_npy(const std::string& path, DType dtype, std::span<const int64_t> shape,
               const void* data);

}  // namespace xattn
