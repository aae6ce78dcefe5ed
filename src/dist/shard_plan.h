#pragma once
// How a part of a bigger attention problem becomes ordinary attention() calls: some of its query
// rows against some of its keys (split-KV: all rows, one rank's keys; ring: one rank's rows, one
// block's keys). The whole problem's diagonal is moved to the part's first row and key, its
// lengths are cut to the part. No MPI here.

#include <cstdint>
#include <vector>

#include "xattn/params.h"

namespace xattn::dist {

// Where a part's rows (or keys) sit in the whole sequence.
struct Place {
  int64_t first = 0;  // rows (keys) before the part
  int64_t count = 0;  // the part's
  int64_t total = 0;  // the whole sequence's
};

// One attention() call over batches [batch_begin, batch_begin + batch_count) of the part.
struct ShardCall {
  int64_t batch_begin = 0, batch_count = 0;
  AttentionParams params;  // its spans point into the ShardPlan's vectors
};

struct ShardPlan {
  std::vector<int64_t> kv_lens, q_lens;  // per batch, the part's keys (rows) that exist; empty: all
  std::vector<ShardCall> calls;
};

// Row i of batch b sees global key j where the whole problem's diagonal puts it; for the part
// that is a top-left call with diagonal_offset = (KV_b - Q_b if bottom-right, else 0) +
// params.diagonal_offset + rows.first - keys.first. One call when that offset is the same for
// every batch (always so top-left, or without lengths), else one call per batch. params'
// kv_lens and q_lens are the whole sequence's. Throws xattn::Error for global arguments it
// cannot place (kv_lens / q_lens of the wrong size or out of range, an offset too large);
// everything else is attention()'s to check. The calls' masks are params.mask as it is.
ShardPlan plan_shard(const AttentionParams& params, int64_t batch, const Place& rows,
                     const Place& keys);

}  // namespace xattn::dist
