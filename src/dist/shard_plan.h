#pragma once
// How one rank's shard of a split-KV problem becomes ordinary attention() calls: the whole
// problem's diagonal moved to the shard's first key, global kv_lens cut to the shard. No MPI here.

#include <cstdint>
#include <vector>

#include "xattn/params.h"

namespace xattn::dist {

// Where this rank's keys sit in the whole sequence.
struct ShardPlace {
  int64_t first_key = 0;   // o_r: keys before this shard, on lower ranks
  int64_t keys = 0;        // n_r
  int64_t total_keys = 0;  // the whole sequence: n_0 + ... + n_{P-1}
};

// One attention() call over batches [batch_begin, batch_begin + batch_count) of the shard.
struct ShardCall {
  int64_t batch_begin = 0, batch_count = 0;
  AttentionParams params;  // its spans point into the ShardPlan's vectors and the caller's q_lens
};

struct ShardPlan {
  std::vector<int64_t> kv_lens;  // per batch, this shard's keys that exist; empty: all of them
  std::vector<ShardCall> calls;
};

// Row i of batch b sees global key o + j where the whole problem's diagonal puts it; locally
// that is a top-left call with diagonal_offset = (KV_b - Q_b if bottom-right, else 0) +
// params.diagonal_offset - o. One call when that offset is the same for every batch (always so
// top-left, or without lengths), else one call per batch. Throws xattn::Error for global
// arguments it cannot place (kv_lens / q_lens of the wrong size or out of range, an offset too
// large); everything else is attention()'s to check.
ShardPlan plan_shard(const AttentionParams& params, int64_t batch, int64_t q_rows,
                     const ShardPlace& place);

}  // namespace xattn::dist
