// attention_split_kv: each rank's key shard -> its partial (out, lse) in f32 -> all-gather ->
// merged by log-sum-exp in rank order on every rank. Collective order, errors or not:
//   1. all-gather of reports: local arguments, shard lengths, values that must match;
//   2. all-gather of reports: the shard's own calls (offsets, global kv_lens) and the buffers;
//   3. all-gather of the partials, each with a status word (a failed compute fails all).

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "dist/agreement.h"
#include "dist/shard_plan.h"
#include "dist/views.h"
#include "xattn/dist.h"
#include "xattn/error.h"

namespace xattn::dist {
namespace {

constexpr const char* kEntry = "attention_split_kv";

// Core's messages name the key and value tensors "k" and "v"; here they are the shards.
std::string shard_names(std::string message) {
  if (message.rfind("k: ", 0) == 0) return "k_shard: " + message.substr(3);
  if (message.rfind("v: ", 0) == 0) return "v_shard: " + message.substr(3);
  return message;
}

constexpr FieldName kFields[] = {
    {"q", "B (batch)", false},
    {"q", "Hq (query heads)", false},
    {"q", "Lq (query rows)", false},
    {"q", "D (head dim)", false},
    {"k_shard", "Hkv (key/value heads)", false},
    {"v_shard", "Dv (value dim)", false},
    {"q", "dtype", false},
    {"out", "dtype", false},
    {"lse", "presence", false},
    {"scale", "presence", false},
    {"scale", "value's bits", false},
    {"softcap", "value's bits", false},
    {"causal", "value", false},
    {"align", "value", false},
    {"window", "left", false},
    {"window", "right", false},
    {"diagonal_offset", "value", false},
    {"kv_lens", "length", false},
    {"kv_lens", "list", true},
    {"q_lens", "length", false},
    {"q_lens", "list", true},
    {"bf16_probabilities", "value", false},
};
static_assert(std::size(kFields) <= kMaxFields);

// The values of kFields, in order; sizes only where the views have the rank to hold them.
void fill_fields(RankReport& r, const TensorView& q, const TensorView& k, const TensorView& v,
                 const AttentionParams& p, const AttentionOutputs& o) {
  int64_t* x = r.values;
  const bool q4 = q.rank() == 4, k4 = k.rank() == 4, v4 = v.rank() == 4;
  *x++ = q4 ? q.size(0) : -1;
  *x++ = q4 ? q.size(1) : -1;
  *x++ = q4 ? q.size(2) : -1;
  *x++ = q4 ? q.size(3) : -1;
  *x++ = k4 ? k.size(1) : -1;
  *x++ = v4 ? v.size(3) : -1;
  *x++ = static_cast<int64_t>(q.dtype);
  *x++ = static_cast<int64_t>(o.out.dtype);
  *x++ = o.lse.present();
  *x++ = p.scale.has_value();
  *x++ = p.scale ? float_bits(*p.scale) : 0;
  *x++ = float_bits(p.softcap);
  *x++ = p.causal;
  *x++ = static_cast<int64_t>(p.align);
  *x++ = p.window.left;
  *x++ = p.window.right;
  *x++ = p.diagonal_offset;
  *x++ = static_cast<int64_t>(p.kv_lens.size());
  *x++ = list_digest(p.kv_lens);
  *x++ = static_cast<int64_t>(p.q_lens.size());
  *x++ = list_digest(p.q_lens);
  *x++ = p.bf16_probabilities;
}

// Step 1's local checks: everything attention() checks that needs no other rank (the shard's
// offset and global kv_lens wait for step 2), and what split-KV does not support.
void check_locally(const TensorView& q, const TensorView& k, const TensorView& v,
                   const AttentionParams& params, const AttentionOutputs& outputs) {
  if (outputs.weights.present())
    throw Error("weights: not available from attention_split_kv (each rank sees its shard only)");
  if (outputs.accumulate) throw Error("accumulate: not supported by attention_split_kv");
  AttentionParams local = params;
  local.align = CausalAlign::kTopLeft;
  local.diagonal_offset = 0;
  local.kv_lens = {};
  validate_attention(q, k, v, local, outputs);
  // The partial of one rank, plus a status word, is one MPI message with an int count.
  const int64_t rows = q.size(0) * q.size(1) * q.size(2);
  if (rows > (INT_MAX - 1) / (v.size(3) + 1))
    throw Error("out: B·Hq·Lq·(Dv + 1) = " + std::to_string(rows) + "·" +
                std::to_string(v.size(3) + 1) + " floats exceed one MPI message (2^31 - 1); "
                "split the call over batches or heads");
}

// This rank's partial, f32: out [B, Hq, Lq, Dv], then lse [B, Hq, Lq], then a status word
// (1: computed) that tells the other ranks whether to trust it.
struct Partial {
  int64_t B, Hq, Lq, Dv;
  size_t size() const { return static_cast<size_t>(B * Hq * Lq * (Dv + 1) + 1); }
  MutableTensorView out(float* base) const { return view(base, {B, Hq, Lq, Dv}); }
  MutableTensorView lse(float* base) const { return view(base + B * Hq * Lq * Dv, {B, Hq, Lq}); }
  float& status(float* base) const { return base[size() - 1]; }
};

void compute_partial(const ShardPlan& plan, const TensorView& q, const TensorView& k,
                     const TensorView& v, const TensorView& mask, const Partial& part, float* base,
                     bool validate_only) {
  const MutableTensorView out = part.out(base), lse = part.lse(base);
  for (const ShardCall& c : plan.calls) {
    AttentionParams p = c.params;
    p.mask = mask_block(mask, c.batch_begin, c.batch_count, 0, q.size(2), 0, k.size(2));
    const auto qb = batches(q, c.batch_begin, c.batch_count);
    const auto kb = batches(k, c.batch_begin, c.batch_count);
    const auto vb = batches(v, c.batch_begin, c.batch_count);
    const AttentionOutputs o{batches(out, c.batch_begin, c.batch_count),
                             batches(lse, c.batch_begin, c.batch_count)};
    if (validate_only) validate_attention(qb, kb, vb, p, o);
    else attention(qb, kb, vb, p, o);
  }
}

}  // namespace

void attention_split_kv(const TensorView& q, const TensorView& k_shard, const TensorView& v_shard,
                        const AttentionParams& params, MPI_Comm comm,
                        const AttentionOutputs& outputs) {
  const auto [rank, size] = check_comm(comm, kEntry);

  // 1. Local arguments and the values that must match.
  RankReport mine;
  try {
    check_locally(q, k_shard, v_shard, params, outputs);
    mine.keys = k_shard.size(2);
  } catch (const Error& e) {
    mine.fail(shard_names(e.what()));
  }
  fill_fields(mine, q, k_shard, v_shard, params, outputs);
  const std::vector<RankReport> all = agree(comm, kEntry, mine, kFields);

  // 2. The shard's place, its calls, and the buffers. Every rank sees the same lengths.
  Place keys;
  for (int r = 0; r < size; ++r) {
    if (r == rank) keys.first = keys.total;
    if (__builtin_add_overflow(keys.total, all[r].keys, &keys.total) ||
        keys.total > (int64_t{1} << 62))
      throw Error(std::string(kEntry) + ": k_shard: the shards' lengths add up beyond 2^62");
  }
  keys.count = mine.keys;
  const Partial part{q.size(0), q.size(1), q.size(2), v_shard.size(3)};
  RankReport ready;
  ShardPlan plan;
  std::vector<float> partials;  // every rank's partial, in rank order
  try {
    plan = plan_shard(params, part.B, {0, part.Lq, part.Lq}, keys);
    partials.resize(part.size() * size);
    compute_partial(plan, q, k_shard, v_shard, params.mask, part, partials.data(), true);
  } catch (const Error& e) {
    ready.fail(shard_names(e.what()));
  } catch (const std::bad_alloc&) {
    ready.fail("out of memory for the " + std::to_string(size) + " partial results");
  }
  agree_ok(comm, kEntry, ready);

  // 3. This rank's partial, then everyone's.
  float* mine_base = partials.data() + part.size() * rank;
  std::string compute_error;
  try {
    compute_partial(plan, q, k_shard, v_shard, params.mask, part, mine_base, false);
    part.status(mine_base) = 1.0f;
  } catch (const std::exception& e) {
    compute_error = e.what();
    part.status(mine_base) = 0.0f;
  }
  MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, partials.data(), static_cast<int>(part.size()),
                MPI_FLOAT, comm);
  if (!compute_error.empty()) throw Error(std::string(kEntry) + ": " + compute_error);
  for (int r = 0; r < size; ++r)
    if (part.status(partials.data() + part.size() * r) != 1.0f)
      throw Error(std::string(kEntry) + ": rank " + std::to_string(r) +
                  " failed to compute its partial result (its own error says why)");

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
  float* acc = partials.data();
  const int steps = std::max(size, 2);
  for (int r = 1; r < steps; ++r) {
    float* next = size == 1 ? nothing.data() : partials.data() + part.size() * r;
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
