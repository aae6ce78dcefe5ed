#pragma once
// Per-thread scratch memory, sized once per work item and reused across calls, so the hot loops
// never allocate.

#include <cstddef>

#include "hwy/aligned_allocator.h"

namespace xattn::core {

class ScratchArena {
 public:
  // At least `floats` floats, 64-byte aligned. Contents are unspecified.
  float* floats(size_t floats) {
    if (floats > capacity_) {
      buffer_ = hwy::AllocateAligned<float>(floats);
      if (!buffer_) throw std::bad_alloc();
      capacity_ = floats;
    }
    return buffer_.get();
  }

  static ScratchArena& for_this_thread() {
    thread_local ScratchArena arena;
    return arena;
  }

 private:
  hwy::AlignedFreeUniquePtr<float[]> buffer_;
  size_t capacity_ = 0;
};

}  // namespace xattn::core
