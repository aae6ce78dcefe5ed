#pragma once
// Non-owning, strided views of caller memory. Strides are in elements (not bytes), may be zero
// (broadcast) or negative, so [B,H,L,D] and [B,L,H,D] layouts are both views of one shape.

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string_view>

namespace xattn {

enum class DType : uint8_t { kF32, kF16, kBF16, kBool };

constexpr int64_t dtype_size(DType t) { return t == DType::kF32 ? 4 : t == DType::kBool ? 1 : 2; }
std::string_view dtype_name(DType t);

inline constexpr int kMaxRank = 4;

struct Layout {
  int rank = 0;
  std::array<int64_t, kMaxRank> shape{};
  std::array<int64_t, kMaxRank> strides{};  // in elements

  // Row-major (C-order) strides for `shape`.
  static Layout contiguous(std::initializer_list<int64_t> shape);
  static Layout strided(std::initializer_list<int64_t> shape, std::initializer_list<int64_t> strides);
  int64_t numel() const;
};

// A read-only view. `data == nullptr` means "absent" where an argument is optional, so a
// required view needs non-null data even when it has no elements.
struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  Layout layout;

  bool present() const { return data != nullptr; }
  int rank() const { return layout.rank; }
  int64_t size(int dim) const { return layout.shape[dim]; }
  int64_t stride(int dim) const { return layout.strides[dim]; }
};

// A writable view, for outputs.
struct MutableTensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Layout layout;

  bool present() const { return data != nullptr; }
  operator TensorView() const { return {data, dtype, layout}; }
};

// Convenience constructors for the common contiguous cases.
inline TensorView view(const float* p, std::initializer_list<int64_t> shape) {
  return {p, DType::kF32, Layout::contiguous(shape)};
}
inline MutableTensorView view(float* p, std::initializer_list<int64_t> shape) {
  return {p, DType::kF32, Layout::contiguous(shape)};
}
inline TensorView view(const void* p, DType t, Layout l) { return {p, t, l}; }
inline MutableTensorView view(void* p, DType t, Layout l) { return {p, t, l}; }

}  // namespace xattn
