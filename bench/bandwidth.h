#pragma once
// Main-memory bandwidth, measured on buffers far larger than the last-level cache so that every
// byte comes from DRAM: STREAM-style copy and a read-only sum.

#include <cstddef>

#include "bench/aligned_buffer.h"

namespace xattn::bench {

class BandwidthProbe {
 public:
  // Allocates two buffers of `bytes` each and touches every page once, so that page faults are
  // not timed.
  explicit BandwidthProbe(size_t bytes = size_t{256} << 20);

  // Copy src -> dst, split across `threads`: (bytes read + bytes written) / s, best of a few.
  double copy_gbps(int threads);

  // SIMD sum of src, split across `threads`: bytes read / s, best of a few. Decoding attention
  // reads K and V without writing, which this measures.
  double read_gbps(int threads);

 private:
  AlignedBuffer<float> src_, dst_;
};

}  // namespace xattn::bench
