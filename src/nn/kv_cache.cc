// The decoder's cache of projected keys and values.

#include "xattn/nn/kv_cache.h"

#include <algorithm>
#include <string>

#include "core/out_of_memory.h"
#include "core/validate.h"
#include "xattn/error.h"

namespace xattn::nn {

KVCache::KVCache(int64_t batch, int64_t num_heads, int64_t head_dim, int64_t capacity)
    : batch_(batch), heads_(num_heads), head_dim_(head_dim) {
  if (batch < 1 || num_heads < 1 || head_dim < 1 || capacity < 0)
    throw Error("KVCache: batch, num_heads and head_dim must be >= 1 and capacity >= 0, got " +
                std::to_string(batch) + ", " + std::to_string(num_heads) + ", " +
                std::to_string(head_dim) + " and " + std::to_string(capacity));
  reserve(capacity);
}

void KVCache::reserve(int64_t capacity) {
  if (capacity <= capacity_) return;
  if (heads_ > INT64_MAX / 4 / head_dim_ || heads_ * head_dim_ > INT64_MAX / 4 / batch_ ||
      capacity > INT64_MAX / 4 / batch_ / (heads_ * head_dim_))
    throw Error("KVCache: a capacity of " + std::to_string(capacity) + " positions overflows");
  const int64_t width = heads_ * head_dim_;
  // K and V, and while they grow the old copy of one of them.
  core::check_memory("KVCache", 3 * batch_ * capacity, width * static_cast<int64_t>(sizeof(float)));
  // Re-lay every sequence at the new row pitch; positions past length_ need no copy. Both grown
  // buffers exist before either replaces its old one, so a failure leaves the cache as it was.
  std::vector<float> grown[2];
  core::translate_allocation_failure("KVCache", [&] {
    for (std::vector<float>& g : grown) g.resize(static_cast<size_t>(batch_ * capacity * width));
  });
  const std::vector<float>* old[2] = {&k_, &v_};
  for (int i = 0; i < 2; ++i)
    for (int64_t n = 0; n < batch_; ++n)
      std::copy_n(old[i]->data() + n * capacity_ * width, length_ * width,
                  grown[i].data() + n * capacity * width);
  k_.swap(grown[0]);
  v_.swap(grown[1]);
  capacity_ = capacity;
}

void KVCache::append(const float* new_k, const float* new_v, int64_t steps) {
  if (steps < 0) throw Error("KVCache::append: steps must be >= 0, got " + std::to_string(steps));
  if (batch_ == 0) throw Error("KVCache::append: the cache was default-constructed");
  if (steps > INT64_MAX / 4 - length_)
    throw Error("KVCache::append: " + std::to_string(steps) + " more positions overflow");
  if (length_ + steps > capacity_) reserve(std::max(length_ + steps, 2 * capacity_));
  const int64_t width = heads_ * head_dim_;
  for (int64_t n = 0; n < batch_; ++n) {
    const int64_t src = n * steps * width, dst = (n * capacity_ + length_) * width;
    std::copy_n(new_k + src, steps * width, k_.data() + dst);
    std::copy_n(new_v + src, steps * width, v_.data() + dst);
  }
  length_ += steps;
}

void KVCache::select(const std::vector<int64_t>& rows) {
  if (static_cast<int64_t>(rows.size()) != batch_)
    throw Error("KVCache::select: expected " + std::to_string(batch_) + " rows, got " +
                std::to_string(rows.size()));
  for (const int64_t r : rows)
    if (r < 0 || r >= batch_)
      throw Error("KVCache::select: row " + std::to_string(r) + " is out of range [0, " +
                  std::to_string(batch_) + ")");
  const int64_t width = heads_ * head_dim_, n = length_ * width;
  for (std::vector<float>* buffer : {&k_, &v_}) {
    std::vector<float> old(buffer->begin(), buffer->end());
    for (int64_t i = 0; i < batch_; ++i)
      std::copy_n(old.data() + rows[i] * capacity_ * width, n, buffer->data() + i * capacity_ * width);
  }
}

TensorView KVCache::view_of(const std::vector<float>& buffer) const {
  const int64_t width = heads_ * head_dim_;
  return {buffer.data(), DType::kF32,
          Layout::strided({batch_, heads_, length_, head_dim_},
                          {capacity_ * width, head_dim_, width, 1})};
}

}  // namespace xattn::nn
