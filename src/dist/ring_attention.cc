// ring_attention, the forward: P steps; at step s rank r computes its rows against the K/V block
// that started on rank r - s, merged into f32 (out, lse) by log-sum-exp, while the block moves on
// to rank r + 1 and the next one arrives. Collective order, errors or not:
//   1. all-gather of reports: local arguments, rows per rank, values that must match;
//   2. all-gather of reports: this rank's buffers and its local calls;
//   3. MPI_Comm_dup, P - 1 block exchanges with the neighbours, an all-reduce of the status
//      (a compute that failed anyway fails every rank), MPI_Comm_free.

#include <mpi.h>

#include <cmath>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "dist/agreement.h"
#include "dist/ring_buffers.h"
#include "dist/ring_checks.h"
#include "dist/ring_exchange.h"
#include "dist/ring_plan.h"
#include "dist/ring_steps.h"
#include "dist/views.h"
#include "xattn/dist.h"
#include "xattn/error.h"

namespace xattn::dist {
namespace {

constexpr const char* kEntry = "ring_attention";

// This rank's f32 partial result [B, Hq, n, Dv] and [B, Hq, n], before any key: out 0, lse -inf.
struct Partial {
  std::vector<float> out, lse;
  MutableTensorView out_view, lse_view;
  explicit Partial(const RingShape& s) {
    const int64_t n = s.rows[s.rank];
    out.assign(s.B * s.Hq * n * s.Dv, 0.0f);
    lse.assign(s.B * s.Hq * n, -std::numeric_limits<float>::infinity());
    out_view = dense_view(out.data(), DType::kF32, s.B, s.Hq, n, s.Dv);
    lse_view = {lse.data(), DType::kF32, Layout::strided({s.B, s.Hq, n}, {s.Hq * n, n, 1})};
  }
};

// One step's calls: this rank's query segments against the block's key segments.
void compute_step(const RingShape& shape, const BlockViews& block, const std::vector<Segment>& keys,
                  const TensorView& q, const AttentionParams& params, Partial& part,
                  std::vector<MPI_Request>& transfers, bool validate_only) {
  for (const Segment& rows : shape.segments[shape.rank])
    for (const Segment& key : keys)
      for (const Segment& piece : progress_pieces(rows))
        for (const ShardCall& c : plan_pair(params, shape, piece, key).calls) {
          const auto in_call = [&](auto t) { return batches(t, c.batch_begin, c.batch_count); };
          const TensorView qs = in_call(rows_of(q, piece.local, piece.length));
          const TensorView ks = in_call(rows_of(block.k, key.local, key.length));
          const TensorView vs = in_call(rows_of(block.v, key.local, key.length));
          AttentionOutputs o{in_call(rows_of(part.out_view, piece.local, piece.length)),
                             in_call(slice(part.lse_view, 2, piece.local, piece.length))};
          o.accumulate = true;
          if (validate_only) {
            validate_attention(qs, ks, vs, c.params, o);
          } else {
            attention(qs, ks, vs, c.params, o);
            progress(transfers);
          }
        }
}

}  // namespace

void ring_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                    const AttentionParams& params, MPI_Comm comm, RingLayout layout,
                    const AttentionOutputs& outputs) {
  // 1. Arguments, alike on every rank.
  const RingShape shape = agree_ring_forward(q, k, v, params, comm, layout, outputs);

  // 2. Memory and the local calls (their offsets), checked before anything moves.
  std::unique_ptr<Partial> part;
  std::unique_ptr<KeyValueBlocks> blocks;
  prepare_on_every_rank(comm, kEntry, "the K/V blocks and the partial result", [&] {
    part = std::make_unique<Partial>(shape);
    blocks = std::make_unique<KeyValueBlocks>(shape, k, v);
    check_ring_mask(params.mask, shape);
    std::vector<MPI_Request> none;
    for (int s = 0; s < shape.size; ++s) {
      const int owner = block_owner(shape.rank, s, shape.size);
      compute_step(shape, blocks->views(owner, 0), shape.segments[owner], q, params, *part, none,
                   true);
    }
  });

  // 3. The ring.
  const RingComm ring(comm);
  std::string failure;
  for (int s = 0; s < shape.size; ++s) {
    const int owner = block_owner(shape.rank, s, shape.size);
    std::vector<MPI_Request> transfers;
    if (s + 1 < shape.size) blocks->post_next(ring, s, transfers);
    if (failure.empty()) {
      try {
        compute_step(shape, blocks->views(owner, s % 2), shape.segments[owner], q, params, *part,
                     transfers, false);
      } catch (const std::exception& e) {
        failure = e.what();  // keep passing blocks on, so that no other rank waits in vain
      }
    }
    wait_all(transfers);
  }
  agree_compute(ring.get(), kEntry, failure);

  store(part->out.data(), outputs.out);
  if (outputs.lse.present()) {
    MutableTensorView lse4 = outputs.lse;  // [B, Hq, n] as [B, Hq, n, 1] for store()
    lse4.layout.rank = 4;
    lse4.layout.shape[3] = 1, lse4.layout.strides[3] = 1;
    store(part->lse.data(), lse4);
  }
}

}  // namespace xattn::dist
