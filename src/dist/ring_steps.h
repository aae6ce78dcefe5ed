#pragma once
// What forward and backward steps share: the travelling K/V blocks (double-buffered, so the next
// block arrives while the current one is computed on), the pieces a step's calls are cut into so
// that MPI can move data between them, and the final agreement that every rank computed.

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dist/ring_checks.h"
#include "dist/ring_exchange.h"
#include "dist/ring_plan.h"
#include "xattn/tensor.h"

namespace xattn::dist {

// K [B, Hkv, n_owner, D] and V [B, Hkv, n_owner, Dv] of one block, row-major.
struct BlockViews {
  TensorView k, v;
};

// Two buffers of packed blocks in the inputs' dtype; this rank's own block starts in buffer 0.
// At step s buffer s % 2 holds the block of block_owner(rank, s).
class KeyValueBlocks {
 public:
  KeyValueBlocks(const RingShape& shape, const TensorView& k, const TensorView& v);
  BlockViews views(int owner, int buffer) const;
  // Sends step s's block on to the next rank and receives step s + 1's into the other buffer.
  void post_next(const RingComm& ring, int step, std::vector<MPI_Request>& transfers);
  int64_t bytes(int owner) const;

 private:
  const RingShape& shape_;
  std::vector<char> buffers_[2];
};

// Query rows cut into a few pieces (whole tiles of rows), so that the transfers progress between
// attention() calls even when a step is one call; at most kMaxPieces pieces.
std::vector<Segment> progress_pieces(const Segment& rows);

// After the last step, collective: when any rank's compute failed (`failure` non-empty here),
// every rank throws xattn::Error naming it, before any output is written.
void agree_compute(MPI_Comm comm, const char* entry, const std::string& failure);

}  // namespace xattn::dist
