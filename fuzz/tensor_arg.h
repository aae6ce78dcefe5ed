#pragma once
// The attention fuzzer's tensor arguments: a view of any layout over a malloc'd block of exactly
// the elements that layout can address, so ASan's redzones catch any access outside it; values
// stored and loaded in any dtype; a copy of the block to show what a call changed.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "xattn/half.h"
#include "xattn/tensor.h"

namespace xattn::fuzz {

// The bytes of the fuzz input, read front to back; 0 once they run out, so a short input
// decodes to the plainest choices.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }
  int pick(int n) { return next() % n; }
  bool flag() { return next() & 1; }
  bool more() const { return pos_ < size_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// splitmix64: the tensor values, from a seed the input chooses.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1p-53; }
  bool chance(double p) { return uniform() < p; }
  double normal() {
    const double u = uniform() + 0x1p-54, w = uniform();
    return std::sqrt(-2 * std::log(u)) * std::cos(6.283185307179586 * w);
  }

 private:
  uint64_t s_;
};

inline bool is_float(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }
inline bool is_known(DType t) { return is_float(t) || t == DType::kBool; }

inline void store(DType t, uint8_t* p, double x) {
  switch (t) {
    case DType::kF32: {
      const float f = static_cast<float>(x);
      std::memcpy(p, &f, 4);
      return;
    }
    case DType::kBool: *p = x != 0; return;
    case DType::kBF16: {
      const uint16_t h = float_to_bf16(static_cast<float>(x));
      std::memcpy(p, &h, 2);
      return;
    }
    default: {  // f16, and 2-byte filler for dtypes that are not a DType (dtype_size says 2)
      const uint16_t h = float_to_f16(static_cast<float>(x));
      std::memcpy(p, &h, 2);
      return;
    }
  }
}

inline double load(DType t, const uint8_t* p) {
  switch (t) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case DType::kBool: return *p ? 1.0 : 0.0;
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return bf16_to_float(h);
    }
    default: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return f16_to_float(h);
    }
  }
}

inline double round_to(DType t, double x) {
  uint8_t tmp[4];
  store(t, tmp, x);
  return load(t, tmp);
}

// Calls fn(flat, offset) for each element of a layout (rank 0..4, sizes >= 0) in row-major
// order, offset in elements from the view's data pointer.
template <class Fn>
void for_each_element(const Layout& l, const Fn& fn) {
  for (int d = 0; d < l.rank; ++d)
    if (l.shape[d] <= 0) return;
  std::array<int64_t, kMaxRank> index{};
  int64_t flat = 0;
  while (true) {
    int64_t off = 0;
    for (int d = 0; d < l.rank; ++d) off += index[d] * l.strides[d];
    fn(flat++, off);
    int d = l.rank - 1;
    for (; d >= 0; --d) {
      if (++index[d] < l.shape[d]) break;
      index[d] = 0;
    }
    if (d < 0) return;
  }
}

// Saturates at INT64_MAX (corrupted sizes may be huge); 0 when any size is 0.
inline int64_t numel(const Layout& l) {
  int64_t n = 1;
  for (int d = 0; d < l.rank && d < kMaxRank; ++d)
    if (l.shape[d] == 0) return 0;
  for (int d = 0; d < l.rank && d < kMaxRank; ++d)
    if (__builtin_mul_overflow(n, l.shape[d], &n)) return std::numeric_limits<int64_t>::max();
  return n;
}

// The most elements one argument may address; a layout reaching further is only passed where
// the call must refuse it before reading anything.
inline constexpr int64_t kMaxElements = int64_t{1} << 20;

class Arg {
 public:
  Arg(const char* name, bool output) : name_(name), output_(output) {}
  Arg(const Arg&) = delete;
  Arg& operator=(const Arg&) = delete;
  ~Arg() { std::free(block_); }

  // What the call is given, set before allocate(); corruptions edit these.
  bool present = false;
  DType dtype = DType::kF32;
  Layout layout;
  bool null_data = false;        // a required argument passed as absent
  const void* alias = nullptr;   // data pointed into another argument's memory instead
  bool self_overlap = false;     // an output layout whose strides may step into each other

  const char* name() const { return name_; }
  bool output() const { return output_; }
  bool valid_rank() const { return layout.rank >= 0 && layout.rank <= kMaxRank; }
  // Sizes ≥ 0 and an address range that fits in memory we allocate.
  bool addressable() const { return addressable_; }
  // |stride|·(size-1) summed overflows 2^62: validation must refuse it.
  bool overflows() const { return overflows_; }
  int64_t esize() const { return dtype_size(dtype); }
  int64_t block_elements() const { return block_elems_; }

  // Allocates exactly the elements the layout can address (none for an empty or unaddressable
  // layout: malloc(0) still gives a distinct, non-null pointer).
  void allocate() {
    addressable_ = overflows_ = false;
    block_elems_ = 0;
    origin_ = 0;
    if (!present) return;
    bool empty = false, negative = !valid_rank();
    int64_t lo = 0, hi = 0;
    constexpr int64_t kLimit = int64_t{1} << 62;
    if (valid_rank()) {
      for (int d = 0; d < layout.rank; ++d) {
        if (layout.shape[d] < 0) negative = true;
        if (layout.shape[d] == 0) empty = true;
      }
      if (!negative && !empty) {
        for (int d = 0; d < layout.rank; ++d) {
          __int128 reach = static_cast<__int128>(layout.shape[d] - 1) * layout.strides[d];
          if (reach > kLimit || reach < -kLimit) { overflows_ = true; break; }
          if (reach < 0) lo += static_cast<int64_t>(reach);
          else hi += static_cast<int64_t>(reach);
          if (hi > kLimit || lo < -kLimit) { overflows_ = true; break; }
        }
        // Zero strides address few elements however many there are: bound both.
        if (!overflows_ && hi - lo + 1 <= kMaxElements && numel(layout) <= kMaxElements) {
          addressable_ = true;
          block_elems_ = hi - lo + 1;
          origin_ = -lo;
        }
      } else if (!negative) {
        addressable_ = true;  // empty: nothing to address
      }
    }
    std::free(block_);
    block_ = static_cast<uint8_t*>(std::malloc(static_cast<size_t>(block_elems_ * esize())));
  }

  void* data() const {
    if (!present || null_data) return nullptr;
    if (alias != nullptr) return const_cast<void*>(alias);
    return block_ + origin_ * esize();
  }
  TensorView view() const { return {data(), dtype, layout}; }
  MutableTensorView mutable_view() const { return {data(), dtype, layout}; }
  uint8_t* block() const { return block_; }

  // The element at `offset` from the data pointer (offsets from for_each_element).
  uint8_t* at(int64_t offset) const { return block_ + (origin_ + offset) * esize(); }
  int64_t slot(int64_t offset) const { return origin_ + offset; }

  // Logical values, row-major over the layout's shape.
  std::vector<double> read() const {
    std::vector<double> out;
    if (!addressable_) return out;
    out.resize(static_cast<size_t>(numel(layout)));
    for_each_element(layout, [&](int64_t flat, int64_t off) { out[flat] = load(dtype, at(off)); });
    return out;
  }

  // Which slots of the block the view addresses.
  std::vector<char> coverage() const {
    std::vector<char> used(static_cast<size_t>(block_elems_), 0);
    if (addressable_) for_each_element(layout, [&](int64_t, int64_t off) { used[slot(off)] = 1; });
    return used;
  }

  void snapshot() { before_.assign(block_, block_ + block_elems_ * esize()); }
  bool unchanged() const {
    return before_.size() == static_cast<size_t>(block_elems_ * esize()) &&
           (before_.empty() || std::memcmp(before_.data(), block_, before_.size()) == 0);
  }
  // Slots outside the view still hold their snapshot (an output wrote only its elements).
  bool gaps_unchanged() const {
    const std::vector<char> used = coverage();
    const int64_t e = esize();
    for (int64_t s = 0; s < block_elems_; ++s)
      if (!used[s] && std::memcmp(before_.data() + s * e, block_ + s * e, static_cast<size_t>(e)) != 0)
        return false;
    return true;
  }

 private:
  const char* name_;
  bool output_;
  bool addressable_ = false, overflows_ = false;
  uint8_t* block_ = nullptr;
  int64_t block_elems_ = 0;
  int64_t origin_ = 0;  // element offset of the data pointer within the block
  std::vector<uint8_t> before_;
};

// A layout for `shape` chosen by the input: a memory order of the dims, padding and a non-unit
// element stride per dim, negative strides; for inputs also zero (broadcast) and overlapping
// strides, for outputs the same marked as refused (zero) or uncertain (overlap). One zero byte
// gives the contiguous row-major layout.
inline Layout decode_layout(const std::vector<int64_t>& shape, Bytes& in, bool output,
                            bool& self_overlap) {
  Layout l;
  l.rank = static_cast<int>(shape.size());
  const int r = l.rank;
  for (int d = 0; d < r; ++d) l.shape[d] = shape[d];
  std::array<int, kMaxRank> order{0, 1, 2, 3};  // order[m]: the dim at memory position m
  std::array<uint8_t, kMaxRank> bits{};
  const uint8_t style = in.next();
  if (style != 0) {
    int code = style;
    std::vector<int> avail;
    for (int d = 0; d < r; ++d) avail.push_back(d);
    for (int m = 0; m < r; ++m) {
      const int i = code % (r - m);
      code /= (r - m);
      order[m] = avail[i];
      avail.erase(avail.begin() + i);
    }
    for (int d = 0; d < r; ++d) bits[d] = in.next();
  }
  int64_t next = 1;
  for (int m = r - 1; m >= 0; --m) {
    const int d = order[m];
    const int64_t s = next * ((bits[d] & 0x40) ? 2 : 1);
    l.strides[d] = s;
    next = s * (std::max<int64_t>(shape[d], 1) + (bits[d] & 3));
  }
  for (int d = 0; d < r; ++d) {
    const int special = (bits[d] >> 3) & 7;
    if (special == 7) {
      l.strides[d] = 0;  // broadcast (an output with size > 1 must be refused)
    } else if (special == 6) {
      l.strides[d] = 1;  // rows that share elements
      if (output && shape[d] > 1) self_overlap = true;
    }
    if (bits[d] & 4) l.strides[d] = -l.strides[d];
  }
  return l;
}

}  // namespace xattn::fuzz
