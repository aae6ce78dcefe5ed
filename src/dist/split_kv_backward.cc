// attention_split_kv_backward. With the WHOLE problem's out and lse (the merged result, alike on
// every rank) and dout (alike on every rank), the probabilities e^(s - lse) and the row term
// delta = rowsum(dout ⊙ out) are the whole problem's, so attention_backward over the shard's
// calls gives exact parts: this shard's dk and dv whole, and its keys' share of
// dq_i = Σ_j ds_ij·k_j. The shares are all-gathered and summed in f32 in rank order on every
// rank, so every rank holds the same bits of dq. Collective order, errors or not, as the forward:
//   1. all-gather of reports: local arguments, shard lengths, values that must match;
//   2. all-gather of reports: the shard's own calls (offsets, global kv_lens) and the buffers;
//   3. all-gather of the dq shares, each with a status word (a failed compute fails all).
// dk, dv and the shares are f32 scratch until every rank has computed, so that an error leaves
// the caller's gradients untouched.

#include <mpi.h>

#include <string>
#include <vector>

#include "dist/ring_buffers.h"
#include "dist/shard_plan.h"
#include "dist/split_kv_checks.h"
#include "dist/split_kv_steps.h"
#include "dist/views.h"
#include "xattn/dist.h"
#include "xattn/error.h"

namespace xattn::dist {
namespace {

constexpr const char* kEntry = "attention_split_kv_backward";

// The forward's results and the loss's gradient, each call's batches of them.
struct Given {
  const TensorView &out, &lse, &dout;
};

void compute_shard(const ShardPlan& plan, const TensorView& q, const TensorView& k,
                   const TensorView& v, const Given& given, const TensorView& mask,
                   const AttentionGradients& grads, bool validate_only) {
  for (const ShardCall& c : plan.calls) {
    const CallInputs in = call_inputs(c, q, k, v, mask);
    const auto cut = [&c](auto t) { return batches(t, c.batch_begin, c.batch_count); };
    const AttentionGradients g{cut(grads.dq), cut(grads.dk), cut(grads.dv)};
    if (validate_only)
      validate_attention_backward(in.q, in.k, in.v, cut(given.out), cut(given.lse),
                                  cut(given.dout), in.params, g);
    else
      attention_backward(in.q, in.k, in.v, cut(given.out), cut(given.lse), cut(given.dout),
                         in.params, g);
  }
}

}  // namespace

void attention_split_kv_backward(const TensorView& q, const TensorView& k_shard,
                                 const TensorView& v_shard, const TensorView& out,
                                 const TensorView& lse, const TensorView& dout,
                                 const AttentionParams& params, MPI_Comm comm,
                                 const AttentionGradients& grads) {
  // 1. Local arguments and the values that must match; the shard's place.
  const SplitKvPlace at =
      agree_split_kv_backward(q, k_shard, v_shard, out, lse, dout, params, comm, grads);

  // 2. The shard's calls, and the f32 buffers: every rank's share of dq (one slot each), and
  // this shard's dk and dv.
  const int64_t B = q.size(0), Hq = q.size(1), Lq = q.size(2), D = q.size(3);
  const int64_t Hkv = k_shard.size(1), n = k_shard.size(2), Dv = v_shard.size(3);
  const Given given{out, lse, dout};
  ShardPlan plan;
  Parts shares;
  std::vector<float> dk, dv;
  const auto f32_grads = [&](float* dq_share) {
    return AttentionGradients{view(dq_share, {B, Hq, Lq, D}), view(dk.data(), {B, Hkv, n, D}),
                              view(dv.data(), {B, Hkv, n, Dv})};
  };
  agree_prepared(comm, kEntry,
                 "the " + std::to_string(at.size) + " shares of dq and this shard's dk and dv",
                 [&] {
                   plan = plan_shard(params, B, {0, Lq, Lq}, at.keys);
                   shares.resize(B * Hq * Lq * D + 1, at.size);
                   dk.resize(B * Hkv * n * D + 1);  // + 1: an empty shard's views need data
                   dv.resize(B * Hkv * n * Dv + 1);
                   compute_shard(plan, q, k_shard, v_shard, given, params.mask,
                                 f32_grads(shares.slot(0)), true);
                 });

  // 3. This rank's share (and its dk, dv), then everyone's shares.
  gather_parts(comm, kEntry, at.rank, "share of dq", shares, [&](float* mine) {
    compute_shard(plan, q, k_shard, v_shard, given, params.mask, f32_grads(mine), false);
  });

  // dq = share 0 + share 1 + ... in rank order, one f32 add each: the same bits everywhere.
  float* dq = shares.slot(0);
  for (int r = 1; r < at.size; ++r) {
    const float* share = shares.slot(r);
    for (int64_t i = 0; i < shares.floats - 1; ++i) dq[i] += share[i];
  }
  store(dq, grads.dq);
  store(dk.data(), grads.dk);
  store(dv.data(), grads.dv);
}

}  // namespace xattn::dist
