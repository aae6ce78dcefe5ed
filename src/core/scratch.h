#pragma once
// Per-thread scratch memory, reused across work items and calls, so the hot loops never
// allocate. A work item lays out its arrays with a Carver: once without memory to measure, then
// over the thread's arena.

#include <cstddef>
#include <cstdint>
#include <new>

#include "hwy/aligned_allocator.h"

namespace xattn::core {

class ScratchArena {
 public:
  // At least `bytes` bytes, 64-byte aligned. Contents are unspecified.
  std::byte* bytes(size_t bytes) {
    if (bytes > capacity_) {
      // Forget the old capacity first: if the allocation fails, buffer_ is null, and a later
      // smaller request must not take the old capacity as still there.
      capacity_ = 0;
      buffer_ = hwy::AllocateAligned<std::byte>(bytes);
      if (!buffer_) throw std::bad_alloc();
      capacity_ = bytes;
    }
    return buffer_.get();
  }

  static ScratchArena& for_this_thread() {
    thread_local ScratchArena arena;
    return arena;
  }

 private:
  hwy::AlignedFreeUniquePtr<std::byte[]> buffer_;
  size_t capacity_ = 0;
};

// Hands out consecutive 64-byte-aligned arrays from `base`; with base == nullptr it only counts.
class Carver {
 public:
  explicit Carver(std::byte* base) : base_(base) {}
  template <class T>
  T* take(int64_t count) {
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
    return p;
  }
  size_t used() const { return used_; }

 private:
  std::byte* base_;
  size_t used_ = 0;
};

}  // namespace xattn::core
