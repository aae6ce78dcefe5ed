// attention_split_kv: each rank's key shard -> its partial (out, lse) in f32 -> all-gather ->
// merged by log-sum-exp in rank order on every rank. Collective order, errors or not:
//   1. all-gather of reports: local arguments, shard lengths, values that must match;
//   2. all-gather of reports: the shard's own calls (offsets, global kv_lens) and the buffers;
//   3. all-gather of the partials, each with a status word (a failed compute fails all).

#include <mpi.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "dist/agreement.h"
#include "dist/shard_plan.h"
#include "dist/split_kv_checks.h"
#include "dist/split_kv_steps.h"
#include "dist/views.h"
#include "xattn/dist.h"
#include "xattn/error.h"

namespace xattn::dist {
namespace {

constexpr const char* kEntry = "attention_split_kv";

// This rank's partial, f32: out [B, Hq, Lq, Dv], then lse [B, Hq, Lq], then the status word.
struct Partial {
  int64_t B, Hq, Lq, Dv;
  int64_t size() const { return B * Hq * Lq * (Dv + 1) + 1; }
  MutableTensorView out(float* base) const { return view(base, {B, Hq, Lq, Dv}); }
  MutableTensorView lse(float* base) const { return view(base + B * Hq * Lq * Dv, {B, Hq, Lq}); }
};

void compute_partial(const ShardPlan& plan, const TensorView& q, const TensorView& k,
                     const TensorView& v, const TensorView& mask, const Partial& part, float* base,
                     bool validate_only) {
  const MutableTensorView out = part.out(base), lse = part.lse(base);
  for (const ShardCall& c : plan.calls) {
    const CallInputs in = call_inputs(c, q, k, v, mask);
    const AttentionOutputs o{batches(out, c.batch_begin, c.batch_count),
                             batches(lse, c.batch_begin, c.batch_count)};
    if (validate_only) validate_attention(in.q, in.k, in.v, in.params, o);
    else attention(in.q, in.k, in.v, in.params, o);
  }
}

}  // namespace

void attention_split_kv(const TensorView& q, const TensorView& k_shard, const TensorView& v_shard,
                        const AttentionParams& params, MPI_Comm comm,
                        const AttentionOutputs& outputs) {
  // 1. Local arguments and the values that must match; the shard's place.
  const SplitKvPlace at = agree_split_kv_forward(q, k_shard, v_shard, params, comm, outputs);
  const int size = at.size;

  // 2. The shard's calls, and the buffers.
  const Partial part{q.size(0), q.size(1), q.size(2), v_shard.size(3)};
  ShardPlan plan;
  Parts partials;  // every rank's partial, in rank order
  agree_prepared(comm, kEntry, "the " + std::to_string(size) + " partial results", [&] {
    plan = plan_shard(params, part.B, {0, part.Lq, part.Lq}, at.keys);
    partials.resize(part.size(), size);
    compute_partial(plan, q, k_shard, v_shard, params.mask, part, partials.slot(0), true);
  });

  // 3. This rank's partial, then everyone's.
  gather_parts(comm, kEntry, at.rank, "partial result", partials, [&](float* mine) {
    compute_partial(plan, q, k_shard, v_shard, params.mask, part, mine, false);
  });

  // Merge in rank order into rank 0's slot; the last step writes the caller's outputs. With one
  // rank, merging with "no keys" (out 0, lse -inf) copies exactly.
  std::vector<float> lse_scratch(outputs.lse.present() ? 0 : part.B * part.Hq * part.Lq + 1);
  const MutableTensorView lse_out =
      outputs.lse.present() ? outputs.lse : view(lse_scratch.data(), {part.B, part.Hq, part.Lq});
  std::vector<float> nothing;
  if (size == 1) {
    nothing.assign(part.size(), -std::numeric_limits<float>::infinity());
    std::fill_n(nothing.begin(), part.B * part.Hq * part.Lq * part.Dv, 0.0f);
  }
  float* acc = partials.slot(0);
  const int steps = std::max(size, 2);
  for (int r = 1; r < steps; ++r) {
    float* next = size == 1 ? nothing.data() : partials.slot(r);
    const bool last = r == steps - 1;
    merge(part.out(acc), part.lse(acc), part.out(next), part.lse(next),
          last ? outputs.out : part.out(acc), last ? lse_out : part.lse(acc));
  }
}

void reject_call(MPI_Comm comm, const std::string& why) {
  if (comm == MPI_COMM_NULL) throw Error("comm: is MPI_COMM_NULL");
  RankReport mine;
  mine.fail(why);
  agree(comm, "xattn::dist", mine, {});  // throws: this rank failed
  throw Error(why);  // (not reached)
}

}  // namespace xattn::dist
