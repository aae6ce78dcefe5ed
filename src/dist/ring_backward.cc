// ring_attention_backward: the forward's ring once more, with the gradients of each K/V block
// travelling behind it. The probabilities e^(z - lse) and delta = rowsum(dout ⊙ out) come from
// the WHOLE sequence's out and lse, so attention_backward over (this rank's rows, one block)
// gives exact parts: dq_i = Σ_blocks (its part), dk_j, dv_j = Σ_ranks (their rows' parts).
//   step s on rank r: block b = r - s; parts into f32 scratch while block b + ... arrives;
//     dq += the rows' part;  acc_b (arrived from rank r - 1, after its step s - 1) += block part;
//     acc_b goes on to rank r + 1 and is received there while that rank computes its next step.
//   After P steps the accumulator of block r has passed every rank and arrives back at rank r.
// Sums are f32 in a fixed order (steps in order; a block's parts in ring order from its owner),
// so the same inputs on the same number of ranks give the same bits.
// Collective order: as the forward (ring_attention.cc), with P gradient exchanges besides.

#include <mpi.h>

#include <algorithm>
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

constexpr const char* kEntry = "ring_attention_backward";

// The forward's arguments and this rank's rows of the whole sequence's out, lse and dout.
struct Rows {
  const TensorView &q, &out, &lse, &dout;
};

// f32 sums and the scratch one call writes its parts into.
struct Sums {
  const RingShape& s;
  std::vector<float> dq;              // [B, Hq, n, D]: this rank's rows
  std::vector<float> part_k, part_v;  // [B, Hkv, n_owner, D|Dv]: this step's part of the block
  std::vector<float> dq_call, dk_call, dv_call;  // one call's, [.., rows or keys of it, ..]
  std::vector<float> travel[2];       // a block's dk then dv, accumulated along the ring

  explicit Sums(const RingShape& shape) : s(shape) {
    const int64_t n = s.rows[s.rank], most = s.max_rows();
    dq.assign(s.B * s.Hq * n * s.D, 0.0f);
    part_k.resize(s.B * s.Hkv * most * s.D);
    part_v.resize(s.B * s.Hkv * most * s.Dv);
    dq_call.resize(s.B * s.Hq * std::min(n, most) * s.D);
    dk_call.resize(part_k.size());
    dv_call.resize(part_v.size());
    for (auto& t : travel) t.resize(part_k.size() + part_v.size());
  }
  int64_t travel_floats(int owner) const {
    return s.block_elements(owner, s.D) + s.block_elements(owner, s.Dv);
  }
};

// One step: the parts of this rank's rows against the block of `owner`, into sums.dq and
// sums.part_k / part_v (zeroed first: a block no row sees gets a zero part).
void compute_step(const RingShape& shape, const BlockViews& block, int owner, const Rows& in,
                  const AttentionParams& params, Sums& sums, std::vector<MPI_Request>& transfers,
                  bool validate_only) {
  const int64_t n = shape.rows[shape.rank], m = shape.rows[owner];
  const int64_t B = shape.B, Hq = shape.Hq, Hkv = shape.Hkv, D = shape.D, Dv = shape.Dv;
  if (!validate_only) {
    std::fill_n(sums.part_k.begin(), B * Hkv * m * D, 0.0f);
    std::fill_n(sums.part_v.begin(), B * Hkv * m * Dv, 0.0f);
  }
  for (const Segment& rows : shape.segments[shape.rank])
    for (const Segment& key : shape.segments[owner])
      for (const Segment& piece : progress_pieces(rows))
        for (const ShardCall& c : plan_pair(params, shape, piece, key).calls) {
          const int64_t b0 = c.batch_begin, nb = c.batch_count, r = piece.length, m_keys = key.length;
          const auto in_call = [&](auto t) { return batches(t, b0, nb); };
          float* const dq_call = sums.dq_call.data() + b0 * Hq * r * D;
          float* const dk_call = sums.dk_call.data() + b0 * Hkv * m_keys * D;
          float* const dv_call = sums.dv_call.data() + b0 * Hkv * m_keys * Dv;
          const AttentionGradients g{dense_view(dq_call, DType::kF32, nb, Hq, r, D),
                                     dense_view(dk_call, DType::kF32, nb, Hkv, m_keys, D),
                                     dense_view(dv_call, DType::kF32, nb, Hkv, m_keys, Dv)};
          const TensorView qs = in_call(rows_of(in.q, piece.local, r)),
                           ks = in_call(rows_of(block.k, key.local, m_keys)),
                           vs = in_call(rows_of(block.v, key.local, m_keys)),
                           os = in_call(rows_of(in.out, piece.local, r)),
                           ls = in_call(slice(in.lse, 2, piece.local, r)),
                           ds = in_call(rows_of(in.dout, piece.local, r));
          if (validate_only) {
            validate_attention_backward(qs, ks, vs, os, ls, ds, c.params, g);
            continue;
          }
          attention_backward(qs, ks, vs, os, ls, ds, c.params, g);
          progress(transfers);
          add_rows(sums.dq.data() + b0 * Hq * n * D, nb, Hq, n, D, piece.local, r, dq_call);
          add_rows(sums.part_k.data() + b0 * Hkv * m * D, nb, Hkv, m, D, key.local, m_keys,
                   dk_call);
          add_rows(sums.part_v.data() + b0 * Hkv * m * Dv, nb, Hkv, m, Dv, key.local, m_keys,
                   dv_call);
        }
}

}  // namespace

void ring_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, const TensorView& lse, const TensorView& dout,
                             const AttentionParams& params, MPI_Comm comm, RingLayout layout,
                             const AttentionGradients& grads) {
  // 1. Arguments, alike on every rank.
  const RingShape shape =
      agree_ring_backward(q, k, v, out, lse, dout, params, comm, layout, grads);
  const Rows in{q, out, lse, dout};

  // 2. Memory and the local calls, checked before anything moves.
  std::unique_ptr<Sums> sums;
  std::unique_ptr<KeyValueBlocks> blocks;
  prepare_on_every_rank(comm, kEntry, "the K/V blocks and the gradient sums", [&] {
    sums = std::make_unique<Sums>(shape);
    blocks = std::make_unique<KeyValueBlocks>(shape, k, v);
    check_ring_mask(params.mask, shape);
    std::vector<MPI_Request> none;
    for (int s = 0; s < shape.size; ++s) {
      const int owner = block_owner(shape.rank, s, shape.size);
      compute_step(shape, blocks->views(owner, 0), owner, in, params, *sums, none, true);
    }
  });

  // 3. The ring: K/V blocks ahead, their gradient accumulators one step behind.
  const RingComm ring(comm);
  std::string failure;
  std::vector<MPI_Request> gradient_transfers;
  for (int s = 0; s < shape.size; ++s) {
    const int owner = block_owner(shape.rank, s, shape.size);
    std::vector<MPI_Request> transfers;
    if (s + 1 < shape.size) blocks->post_next(ring, s, transfers);
    if (failure.empty()) {
      try {
        compute_step(shape, blocks->views(owner, s % 2), owner, in, params, *sums, transfers,
                     false);
      } catch (const std::exception& e) {
        failure = e.what();  // keep passing blocks on, so that no other rank waits in vain
      }
    }
    // The accumulator of this step's block: this rank's part alone at its owner (s = 0), else
    // the one that came from the previous rank, plus this rank's part.
    std::vector<float>& acc = sums->travel[s % 2];
    const int64_t dk_floats = shape.block_elements(owner, shape.D);
    const int64_t floats = sums->travel_floats(owner);
    wait_all(gradient_transfers);
    if (s == 0) std::fill_n(acc.begin(), floats, 0.0f);
    for (int64_t i = 0; i < dk_floats; ++i) acc[i] += sums->part_k[i];
    for (int64_t i = dk_floats; i < floats; ++i) acc[i] += sums->part_v[i - dk_floats];
    // On to the next rank; what arrives is the block this rank holds next (its own, at the end).
    // Alone, this rank's block is its own already.
    const int next_owner = block_owner(shape.rank, s + 1, shape.size);
    if (shape.size > 1)
      post_exchange(ring, Stream::kGradients, acc.data(), floats * 4,
                    sums->travel[(s + 1) % 2].data(), sums->travel_floats(next_owner) * 4,
                    gradient_transfers);
    wait_all(transfers);
  }
  wait_all(gradient_transfers);
  agree_compute(ring.get(), kEntry, failure);

  const float* own = sums->travel[shape.size > 1 ? shape.size % 2 : 0].data();
  store(sums->dq.data(), grads.dq);
  store(own, grads.dk);
  store(own + shape.block_elements(shape.rank, shape.D), grads.dv);
}

}  // namespace xattn::dist
