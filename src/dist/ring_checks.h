#pragma once
// ring_attention's collective argument checks (agreement.h), shared by forward and backward:
// every rank's own arguments, the values that must match, and the rows each rank holds.

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "dist/ring_plan.h"
#include "dist/shard_plan.h"
#include "xattn/attention.h"
#include "xattn/dist.h"

namespace xattn::dist {

// What the checks establish, alike on every rank.
struct RingShape {
  int rank = 0, size = 1;
  int64_t B = 0, Hq = 0, Hkv = 0, D = 0, Dv = 0;
  DType dtype = DType::kF32;
  std::vector<int64_t> rows;                    // per rank
  std::vector<std::vector<Segment>> segments;  // per rank: where its rows sit
  int64_t block_elements(int owner, int64_t width) const { return B * Hkv * rows[owner] * width; }
  int64_t max_rows() const;
  int64_t total_rows() const;  // L, the whole sequence
};

// The first collective of ring_attention (a forward): throws the same xattn::Error on every
// rank when any rank's arguments are bad or the ranks disagree.
RingShape agree_ring_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                             const AttentionParams& params, MPI_Comm comm, RingLayout layout,
                             const AttentionOutputs& outputs);

// The same for ring_attention_backward.
RingShape agree_ring_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, const TensorView& lse, const TensorView& dout,
                              const AttentionParams& params, MPI_Comm comm, RingLayout layout,
                              const AttentionGradients& grads);

// Throws xattn::Error unless `mask` (if present) broadcasts to [B, Hq, n, L]: this rank's rows
// of the whole sequence's mask, every key. Checked before plan_pair cuts it.
void check_ring_mask(const TensorView& mask, const RingShape& shape);

// The attention() calls of this rank's `rows` against the `keys` of a block: the whole
// sequence's diagonal, lengths and mask placed at them (plan_shard, mask_block), and only the
// calls in which some row sees some key. Throws xattn::Error for an offset it cannot place or
// lengths out of range.
ShardPlan plan_pair(const AttentionParams& params, const RingShape& shape, const Segment& rows,
                    const Segment& keys);

}  // namespace xattn::dist
