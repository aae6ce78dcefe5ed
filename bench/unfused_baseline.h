#pragma once
// The unfused attention a user would write with a BLAS, which xattn's speed-up is measured
// against: for each batch entry and query head, S = scale·Q·Kᵀ (OpenBLAS sgemm), a max-subtracted
// row softmax in plain C++ (std::exp), O = P·V (sgemm). S is materialised, one head (or block of
// a head's rows) at a time.

#include <cstdint>
#include <string>

#include "bench/aligned_buffer.h"
#include "bench/operands.h"

namespace xattn::bench {

// The BLAS the baseline runs on, as it describes itself ("OpenBLAS 0.3.21 DYNAMIC_ARCH ...").
std::string blas_description();

class UnfusedBaseline {
 public:
  // Allocates the output and, for bf16 operands, their f32 copies.
  explicit UnfusedBaseline(const Operands& operands);

  // Computes O [B, Hq, Lq, Dv] in f32 on `threads` threads. bf16 operands are first converted to
  // f32, as part of the call: a BLAS has no bf16 sgemm.
  //
  // The threads are OpenMP's, each taking whole heads (or, when there are fewer heads than
  // threads, blocks of a head's query rows) and calling a single-threaded sgemm. Not OpenBLAS's
  // own threads: its pthreads and OpenMP's, alternating on the same cores, spin against each
  // other. On the 2-core development machine sd-unet-xattn's baseline took 27-180 ms at
  // 2 threads that way (threaded sgemm per head, OpenMP softmax over rows) against 30 ms at
  // 1 thread and 15 ms this way; and OpenBLAS's threads kept spinning after a call, slowing the
  // xattn call timed next.
  void run(int threads);

  const float* output() const { return out_.data(); }

 private:
  // Rows [r0, r1) of head bh = b·Hq + h into out_, with S ([r1 - r0, Lk]) as scratch.
  void rows(int64_t bh, int64_t r0, int64_t r1, const float* q, const float* k, const float* v, float* S);

  const Operands& in_;
  AlignedBuffer<float> q32_, k32_, v32_;  // bf16 operands only
  AlignedBuffer<float> scores_;           // one row block's scores per thread
  AlignedBuffer<float> out_;
};

}  // namespace xattn::bench
