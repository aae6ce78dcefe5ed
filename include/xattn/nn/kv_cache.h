#pragma once
// Keys and values already projected, for decoders: the encoder output projected once for the
// cross-attention, and the decoder's own keys and values growing one step at a time.

#include <cstdint>
#include <vector>

#include "xattn/tensor.h"

namespace xattn::nn {

// K and V of `batch` sequences, `width` = num_heads · head_dim values per position, stored
// [batch][capacity][width] so that a kernel call reads them in place as [batch, heads, length,
// head_dim]. The capacity doubles when an append needs more (one copy, like std::vector).
class KVCache {
 public:
  KVCache() = default;
  KVCache(int64_t batch, int64_t num_heads, int64_t head_dim, int64_t capacity = 0);

  int64_t batch() const { return batch_; }
  int64_t num_heads() const { return heads_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }

  // Appends `steps` positions to every sequence: new_k and new_v hold [batch][steps][width]
  // (width = num_heads · head_dim, rows adjacent). Throws xattn::Error for a negative count, or
  // when the grown cache would not fit in memory (the cache is then left as it was).
  void append(const float* new_k, const float* new_v, int64_t steps);
  void clear() { length_ = 0; }
  // Keeps sequence rows[i] as sequence i (a beam search's surviving hypotheses, each taking its
  // parent's history): the batch stays the same size. Throws xattn::Error for a wrong count or
  // an index out of range, leaving the cache as it was.
  void select(const std::vector<int64_t>& rows);

  // [batch, num_heads, length, head_dim] views of the stored positions.
  TensorView keys() const { return view_of(k_); }
  TensorView values() const { return view_of(v_); }

 private:
  TensorView view_of(const std::vector<float>& buffer) const;
  void reserve(int64_t capacity);

  int64_t batch_ = 0, heads_ = 0, head_dim_ = 0, length_ = 0, capacity_ = 0;
  std::vector<float> k_, v_;
};

}  // namespace xattn::nn
