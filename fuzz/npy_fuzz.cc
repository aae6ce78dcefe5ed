// Fuzzes read_npy: any bytes either raise xattn::Error or give an array that is consistent with
// itself and with the file (its data is the file's tail, its view addresses every element once,
// inside the data) and that survives a write_npy / read_npy round trip.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "xattn/error.h"
#include "xattn/npy.h"

namespace {

using xattn::fuzz::check;

// The element offsets (in elements) of the view, in row-major index order.
std::vector<int64_t> view_offsets(const xattn::TensorView& v, int64_t numel) {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(numel));
  if (numel == 0) return out;
  int64_t index[xattn::kMaxRank] = {};
  while (true) {
    int64_t off = 0;
    for (int d = 0; d < v.rank(); ++d) off += index[d] * v.stride(d);
    out.push_back(off);
    int d = v.rank() - 1;
    for (; d >= 0; --d) {
      if (++index[d] < v.size(d)) break;
      index[d] = 0;
    }
    if (d < 0) break;
  }
  return out;
}

void check_array(const xattn::NpyArray& a, const uint8_t* data, size_t size) {
  using xattn::DType;
  check(a.dtype == DType::kF32 || a.dtype == DType::kF16 || a.dtype == DType::kBool,
        "read_npy returned a dtype it cannot read");
  check(a.shape.size() <= static_cast<size_t>(xattn::kMaxRank), "rank above kMaxRank");
  int64_t numel = 1;
  for (int64_t d : a.shape) {
    check(d >= 0, "negative dimension");
    check(!__builtin_mul_overflow(numel, d, &numel), "numel overflows");
  }
  check(a.numel() == numel, "numel() disagrees with the shape");
  const int64_t esize = xattn::dtype_size(a.dtype);
  check(static_cast<int64_t>(a.bytes.size()) == numel * esize, "bytes.size() != numel * itemsize");
  check(a.bytes.size() <= size, "more data than the file holds");
  check(a.bytes.empty() ||
            std::memcmp(a.bytes.data(), data + size - a.bytes.size(), a.bytes.size()) == 0,
        "the data is not the file's tail");

  const xattn::TensorView v = a.view();
  check(v.present(), "view() has null data");
  check(v.dtype == a.dtype && v.rank() == static_cast<int>(a.shape.size()), "view() dtype/rank");
  for (int d = 0; d < v.rank(); ++d) check(v.size(d) == a.shape[d], "view() shape");
  if (numel == 0) return;
  check(v.data == a.bytes.data(), "view() does not start at the data");
  // Small arrays: every element exactly once, in C or Fortran order, and readable (ASan).
  if (numel > (int64_t{1} << 16)) return;
  const std::vector<int64_t> offsets = view_offsets(v, numel);
  std::vector<char> seen(static_cast<size_t>(numel), 0);
  const auto* base = static_cast<const unsigned char*>(v.data);
  unsigned sum = 0;
  for (size_t flat = 0; flat < offsets.size(); ++flat) {
    const int64_t off = offsets[flat];
    check(off >= 0 && off < numel, "view() addresses an element outside the data");
    check(!seen[static_cast<size_t>(off)], "view() addresses an element twice");
    seen[static_cast<size_t>(off)] = 1;
    for (int64_t b = 0; b < esize; ++b) sum += base[off * esize + b];
  }
  (void)sum;
  // C order stores element (i0, .., in) at its row-major index, Fortran order at the
  // column-major one: Σ i_d · Π_{e<d} shape[e].
  for (size_t flat = 0; flat < offsets.size(); ++flat) {
    int64_t rest = static_cast<int64_t>(flat), want = 0, step = 1;
    std::vector<int64_t> index(a.shape.size());
    for (int d = static_cast<int>(a.shape.size()) - 1; d >= 0; --d) {
      index[d] = rest % a.shape[d];
      rest /= a.shape[d];
    }
    for (size_t d = 0; d < a.shape.size(); ++d) {
      const size_t dim = a.fortran_order ? d : a.shape.size() - 1 - d;
      want += index[dim] * step;
      step *= a.shape[dim];
    }
    check(offsets[flat] == want, "view() strides do not match the file's order");
  }

  // Round trip: write the logical (row-major) values, read them back.
  std::vector<std::byte> logical(a.bytes.size());
  for (size_t flat = 0; flat < offsets.size(); ++flat)
    std::memcpy(&logical[flat * esize], &a.bytes[offsets[flat] * esize], static_cast<size_t>(esize));
  static const std::string path = xattn::fuzz::scratch_path(".npy");
  xattn::write_npy(path, a.dtype, a.shape, logical.data());
  const xattn::NpyArray b = xattn::read_npy(path);
  check(b.dtype == a.dtype && b.shape == a.shape && !b.fortran_order && b.bytes == logical,
        "write_npy / read_npy round trip changed the array");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static xattn::fuzz::MemFile file;
  const std::string& path = file.write(data, size);
  xattn::NpyArray a;
  try {
    a = xattn::read_npy(path);
  } catch (const xattn::Error&) {
    return 0;
  }
  check_array(a, data, size);
  return 0;
}
