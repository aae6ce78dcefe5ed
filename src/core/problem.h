#pragma once
// The validated, normalised description of one attention call that the kernels consume.
// Dense and varlen calls both become this: per-sequence row offsets over 4-D strided views.

#include <cstdint>
#include <vector>

#include "xattn/tensor.h"

namespace xattn::core {

// A strided 4-D operand [b, h, l, d]; strides in elements. For varlen inputs the b stride is 0
// and each sequence's rows start at its own offset (Sequence::q_start / kv_start).
struct Operand {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t stride[4] = {0, 0, 0, 0};

  bool present() const { return data != nullptr; }
  int64_t offset(int64_t b, int64_t h, int64_t l, int64_t d) const {
    return b * stride[0] + h * stride[1] + l * stride[2] + d * stride[3];
  }
};

struct Sequence {
  int64_t q_start = 0;   // first row of this sequence in q / out / lse / weights
  int64_t q_rows = 0;    // rows to write (dense: Lq; varlen: its length)
  int64_t q_len = 0;     // rows that attend; rows in [q_len, q_rows) output zeros
  int64_t kv_start = 0;  // first key row in k / v
  int64_t kv_rows = 0;   // key rows of k / v this sequence owns (dense: Lk; varlen: its length)
  int64_t kv_len = 0;    // keys that exist for this sequence (at most kv_rows)
};

struct Problem {
  int64_t batch = 0, heads_q = 0, heads_kv = 0, head_dim = 0, value_dim = 0;
  int64_t max_q_rows = 0, max_kv_len = 0;  // the extents a dense mask / weights are indexed by
  std::vector<Sequence> sequences;

  Operand q, k, v;                // inputs, one dtype
  Operand mask;                   // optional, [b, hq, i, j] with stride 0 where broadcast
  Operand out, lse, weights;      // outputs (const-cast on write); lse/weights optional
  // Weights have Lk columns (dense) or max_k (varlen); columns j >= kv_len are written as 0.
  int64_t weights_cols = 0;

  float scale = 1.0f;
  float softcap = 0.0f;
  bool causal = false;
  bool bottom_right = false;
  int64_t window_left = -1, window_right = -1;
  int64_t diagonal_offset = 0;  // added to every row's diagonal; |offset| + Lq + Lk <= 2^61
  bool bf16_probabilities = false;
  bool accumulate = false;  // out and lse hold a result over other keys: merge into it
  int num_threads = 1;

  int64_t group_size() const { return heads_kv ? heads_q / heads_kv : 0; }  // Hkv = 0: empty
};

// A backward call: the forward's problem (out and lse now inputs), plus dout and the gradients.
struct BackwardProblem {
  Problem fwd;
  Operand dout;
  Operand dq, dk, dv;  // outputs (const-cast on write)
  // Optional mask gradient: the caller's view, and the same broadcast onto [b, h, i, j] as
  // strides into a dense row-major array of the view's shape (0 on broadcast dims).
  MutableTensorView dmask_view;
  Operand dmask_dense;
  int64_t dmask_size = 0;  // elements of the view
  // Whether rows of different (b, h, i) add into one dmask element (the mask broadcasts over
  // them): each thread then sums into its own copy, and the copies are added in thread order.
  bool dmask_shared = false;
};

}  // namespace xattn::core
