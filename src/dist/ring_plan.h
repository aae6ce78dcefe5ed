#pragma once
// Where each rank's rows sit in the whole sequence under a ring layout, and whether a call of
// a ring step has anything to compute. No MPI here.

#include <cstdint>
#include <span>
#include <vector>

#include "xattn/dist.h"
#include "xattn/params.h"

namespace xattn::dist {

// `length` rows of a rank's tensors, from local row `local`, are rows `global` .. of the sequence.
struct Segment {
  int64_t local = 0;
  int64_t global = 0;
  int64_t length = 0;
};

// The segments of every rank, in rank order, from each rank's row count. Contiguous: one segment
// per rank, in rank order. Zigzag: every rank holds the same even count n = 2c, as chunks r and
// 2P-1-r of the sequence cut into 2P chunks of c rows. Throws xattn::Error (naming the ranks)
// when zigzag's counts differ or are odd, or the rows add up beyond 2^62.
std::vector<std::vector<Segment>> ring_segments(RingLayout layout, std::span<const int64_t> rows);

// Whether any of the first `rows` rows of a top-left call sees any of its first `keys` keys
// under the call's causal flag, window and diagonal_offset.
bool sees_any(const AttentionParams& call, int64_t rows, int64_t keys);

// The largest of per-batch lengths, or `all` when there are none (every row or key exists).
int64_t max_length(std::span<const int64_t> lens, int64_t all);

// The rank whose K/V block rank `rank` holds at ring step `step` (blocks move to rank + 1).
inline int block_owner(int rank, int step, int size) { return ((rank - step) % size + size) % size; }

}  // namespace xattn::dist
