#include "dist/split_kv_checks.h"

#include <climits>
#include <string>
#include <vector>

#include "dist/agreement.h"
#include "dist/call_fields.h"
#include "xattn/error.h"

namespace xattn::dist {
namespace {

constexpr std::array<FieldName, 6> kShapeFields = {{
    {"q", "B (batch)", false},
    {"q", "Hq (query heads)", false},
    {"q", "Lq (query rows)", false},
    {"q", "D (head dim)", false},
    {"k_shard", "Hkv (key/value heads)", false},
    {"v_shard", "Dv (value dim)", false},
}};
constexpr auto kFields = join_fields(kShapeFields, kCallFields);
static_assert(kFields.size() <= kMaxFields);

// The values of kFields, in order; sizes only where the views have the rank to hold them.
void fill_fields(RankReport& r, const TensorView& q, const TensorView& k, const TensorView& v,
                 const AttentionParams& p, const OutputDtypes& t) {
  int64_t* x = r.values;
  const bool q4 = q.rank() == 4, k4 = k.rank() == 4, v4 = v.rank() == 4;
  *x++ = q4 ? q.size(0) : -1;
  *x++ = q4 ? q.size(1) : -1;
  *x++ = q4 ? q.size(2) : -1;
  *x++ = q4 ? q.size(3) : -1;
  *x++ = k4 ? k.size(1) : -1;
  *x++ = v4 ? v.size(3) : -1;
  fill_call_fields(x, q.dtype, p, t);
}

// What a rank checks alone: the whole problem's diagonal and kv_lens wait for the shards'
// places (step 2), so the local call is top-left, unshifted, with all keys.
AttentionParams local_params(const AttentionParams& params) {
  AttentionParams local = params;
  local.align = CausalAlign::kTopLeft;
  local.diagonal_offset = 0;
  local.kv_lens = {};
  return local;
}

// One rank's part of the all-gather, rows·width floats plus a status word, is one MPI message
// with an int count. `formula` names the part's size for the message.
void check_one_message(const char* arg, const char* formula, int64_t rows, int64_t width) {
  if (width > 0 && rows > (INT_MAX - 1) / width)
    throw Error(std::string(arg) + ": " + formula + " = " + std::to_string(rows) + "·" +
                std::to_string(width) + " floats exceed one MPI message (2^31 - 1); "
                "split the call over batches or heads");
}

// All ranks' reports, then this rank's keys in the whole sequence. Every rank sees the same
// lengths, so an overflow throws alike everywhere.
SplitKvPlace conclude(MPI_Comm comm, const char* entry, const RankReport& mine, int rank,
                      int size) {
  const std::vector<RankReport> all = agree(comm, entry, mine, kFields);
  SplitKvPlace at{rank, size, {}};
  for (int r = 0; r < size; ++r) {
    if (r == rank) at.keys.first = at.keys.total;
    if (__builtin_add_overflow(at.keys.total, all[r].keys, &at.keys.total) ||
        at.keys.total > (int64_t{1} << 62))
      throw Error(std::string(entry) + ": k_shard: the shards' lengths add up beyond 2^62");
  }
  at.keys.count = mine.keys;
  return at;
}

}  // namespace

std::string shard_names(std::string message) {
  if (message.rfind("k: ", 0) == 0) return "k_shard: " + message.substr(3);
  if (message.rfind("v: ", 0) == 0) return "v_shard: " + message.substr(3);
  return message;
}

SplitKvPlace agree_split_kv_forward(const TensorView& q, const TensorView& k_shard,
                                    const TensorView& v_shard, const AttentionParams& params,
                                    MPI_Comm comm, const AttentionOutputs& outputs) {
  constexpr const char* kEntry = "attention_split_kv";
  const auto [rank, size] = check_comm(comm, kEntry);
  RankReport mine;
  try {
    if (outputs.weights.present())
      throw Error("weights: not available from attention_split_kv (each rank sees its shard only)");
    if (outputs.accumulate) throw Error("accumulate: not supported by attention_split_kv");
    validate_attention(q, k_shard, v_shard, local_params(params), outputs);
    check_one_message("out", "B·Hq·Lq·(Dv + 1)", q.size(0) * q.size(1) * q.size(2),
                      v_shard.size(3) + 1);
    mine.keys = k_shard.size(2);
  } catch (const Error& e) {
    mine.fail(shard_names(e.what()));
  }
  fill_fields(mine, q, k_shard, v_shard, params, forward_dtypes(outputs));
  return conclude(comm, kEntry, mine, rank, size);
}

SplitKvPlace agree_split_kv_backward(const TensorView& q, const TensorView& k_shard,
                                     const TensorView& v_shard, const TensorView& out,
                                     const TensorView& lse, const TensorView& dout,
                                     const AttentionParams& params, MPI_Comm comm,
                                     const AttentionGradients& grads) {
  constexpr const char* kEntry = "attention_split_kv_backward";
  const auto [rank, size] = check_comm(comm, kEntry);
  RankReport mine;
  try {
    // A mask's columns broadcast over keys, or its batches split into one call per batch,
    // would need sums across ranks or calls: not worth it for a bias split across ranks.
    if (grads.dmask.present())
      throw Error("dmask: not supported by attention_split_kv_backward (the mask gets no "
                  "gradient); pass no dmask");
    validate_attention_backward(q, k_shard, v_shard, out, lse, dout, local_params(params), grads);
    check_one_message("dq", "B·Hq·Lq·D", q.size(0) * q.size(1) * q.size(2), q.size(3));
    mine.keys = k_shard.size(2);
  } catch (const Error& e) {
    mine.fail(shard_names(e.what()));
  }
  fill_fields(mine, q, k_shard, v_shard, params, backward_dtypes(out, lse, dout, grads));
  return conclude(comm, kEntry, mine, rank, size);
}

}  // namespace xattn::dist
