#pragma once
// Uninitialised heap storage that starts on a 64-byte boundary: a cache line and a whole AVX-512
// vector, so neither the kernel under test nor the bandwidth probes pay for split accesses.

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>

namespace xattn::bench {

template <class T>
class AlignedBuffer {
  static_assert(std::is_trivial_v<T>, "holds plain numbers only: nothing is constructed");

 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n) : size_(n), data_(allocate(n)) {}

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return data_.get()[i]; }
  const T& operator[](size_t i) const { return data_.get()[i]; }

 private:
  static constexpr size_t kAlign = 64;
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };

  static T* allocate(size_t n) {
    if (n > (SIZE_MAX - kAlign) / sizeof(T)) throw std::bad_alloc();
    // aligned_alloc wants a size that is a multiple of the alignment.
    const size_t bytes = (n * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, bytes == 0 ? kAlign : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }

  size_t size_ = 0;
  std::unique_ptr<T, Free> data_;
};

}  // namespace xattn::bench
