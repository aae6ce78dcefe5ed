#include "dist/ring_checks.h"

#include <algorithm>
#include <string>

#include "dist/agreement.h"
#include "dist/call_fields.h"
#include "dist/views.h"
#include "xattn/error.h"

namespace xattn::dist {
namespace {

constexpr std::array<FieldName, 5> kShapeFields = {{
    {"q", "B (batch)", false},
    {"q", "Hq (query heads)", false},
    {"q", "D (head dim)", false},
    {"k", "Hkv (key/value heads)", false},
    {"v", "Dv (value dim)", false},
}};
constexpr std::array<FieldName, 2> kRingFields = {{
    {"mask", "presence", false},
    {"layout", "value", false},
}};
constexpr auto kFields = join_fields(join_fields(kShapeFields, kCallFields), kRingFields);
static_assert(kFields.size() <= kMaxFields);

// The values of kFields, in order; sizes only where the views have the rank to hold them.
void fill_fields(RankReport& r, const TensorView& q, const TensorView& k, const TensorView& v,
                 const AttentionParams& p, RingLayout layout, const OutputDtypes& t) {
  int64_t* x = r.values;
  const bool q4 = q.rank() == 4, k4 = k.rank() == 4, v4 = v.rank() == 4;
  *x++ = q4 ? q.size(0) : -1;
  *x++ = q4 ? q.size(1) : -1;
  *x++ = q4 ? q.size(3) : -1;
  *x++ = k4 ? k.size(1) : -1;
  *x++ = v4 ? v.size(3) : -1;
  x = fill_call_fields(x, q.dtype, p, t);
  *x++ = p.mask.present();
  *x++ = static_cast<int64_t>(layout);
}

void check_layout(RingLayout layout) {
  if (layout != RingLayout::kContiguous && layout != RingLayout::kZigzag)
    throw Error("layout: expected RingLayout::kContiguous or RingLayout::kZigzag, got " +
                std::to_string(static_cast<int>(layout)));
}

// Self-attention: this rank's rows of Q, K and V are the same rows.
void check_rows(const TensorView& q, const TensorView& k) {
  if (k.size(2) != q.size(2))
    throw Error("k: dim 2 (rows) must equal q's on this rank (each rank holds the same rows of "
                "Q, K and V): expected " + std::to_string(q.size(2)) + ", got " +
                std::to_string(k.size(2)));
}

// The params of this rank's rows against its own keys, for the local checks. The mask, the
// lengths and the diagonal are the whole sequence's: they are placed per call later, once every
// rank's rows are known (plan_pair).
AttentionParams local_params(const AttentionParams& params) {
  AttentionParams local = params;
  local.align = CausalAlign::kTopLeft;
  local.diagonal_offset = 0;
  local.mask = {};
  local.kv_lens = {};
  local.q_lens = {};
  return local;
}

RingShape conclude(MPI_Comm comm, const char* entry, RankReport& mine, const TensorView& q,
                   const TensorView& k, const TensorView& v, RingLayout layout, int rank,
                   int size) {
  const std::vector<RankReport> all = agree(comm, entry, mine, kFields);
  RingShape shape;
  shape.rank = rank, shape.size = size;
  shape.B = q.size(0), shape.Hq = q.size(1), shape.D = q.size(3);
  shape.Hkv = k.size(1), shape.Dv = v.size(3), shape.dtype = q.dtype;
  for (const RankReport& r : all) shape.rows.push_back(r.keys);
  try {
    shape.segments = ring_segments(layout, shape.rows);  // alike on every rank: same rows
  } catch (const Error& e) {
    throw Error(std::string(entry) + ": " + e.what());
  }
  return shape;
}

}  // namespace

int64_t RingShape::max_rows() const {
  return rows.empty() ? 0 : *std::max_element(rows.begin(), rows.end());
}

RingShape agree_ring_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                             const AttentionParams& params, MPI_Comm comm, RingLayout layout,
                             const AttentionOutputs& outputs) {
  constexpr const char* kEntry = "ring_attention";
  const auto [rank, size] = check_comm(comm, kEntry);
  RankReport mine;
  try {
    check_layout(layout);
    if (outputs.weights.present())
      throw Error("weights: not available from ring_attention (no rank sees a whole row)");
    if (outputs.accumulate) throw Error("accumulate: not supported by ring_attention");
    validate_attention(q, k, v, local_params(params), outputs);
    check_rows(q, k);
    mine.keys = q.size(2);
  } catch (const Error& e) {
    mine.fail(e.what());
  }
  fill_fields(mine, q, k, v, params, layout, forward_dtypes(outputs));
  return conclude(comm, kEntry, mine, q, k, v, layout, rank, size);
}

RingShape agree_ring_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, const TensorView& lse, const TensorView& dout,
                              const AttentionParams& params, MPI_Comm comm, RingLayout layout,
                              const AttentionGradients& grads) {
  constexpr const char* kEntry = "ring_attention_backward";
  const auto [rank, size] = check_comm(comm, kEntry);
  RankReport mine;
  try {
    check_layout(layout);
    if (grads.dmask.present())
      throw Error("dmask: not supported by ring_attention_backward (the mask gets no gradient)");
    validate_attention_backward(q, k, v, out, lse, dout, local_params(params), grads);
    check_rows(q, k);
    mine.keys = q.size(2);
  } catch (const Error& e) {
    mine.fail(e.what());
  }
  fill_fields(mine, q, k, v, params, layout, backward_dtypes(out, lse, dout, grads));
  return conclude(comm, kEntry, mine, q, k, v, layout, rank, size);
}

int64_t RingShape::total_rows() const {
  int64_t total = 0;
  for (int64_t n : rows) total += n;  // at most 2^62: ring_segments checked
  return total;
}

void check_ring_mask(const TensorView& mask, const RingShape& s) {
  if (!mask.present()) return;
  const int64_t whole[4] = {s.B, s.Hq, s.rows[s.rank], s.total_rows()};
  bool fits = mask.rank() <= 4;
  for (int d = 0; fits && d < mask.rank(); ++d) {
    const int64_t n = mask.size(d), want = whole[4 - mask.rank() + d];
    fits = n == 1 || n == want;
  }
  if (fits) return;
  std::string got;
  for (int d = 0; d < mask.rank(); ++d) got += (d ? ", " : "") + std::to_string(mask.size(d));
  throw Error("mask: expected a shape that broadcasts to [B, Hq, n, L] = [" +
              std::to_string(whole[0]) + ", " + std::to_string(whole[1]) + ", " +
              std::to_string(whole[2]) + ", " + std::to_string(whole[3]) +
              "] (this rank's rows of the whole sequence's mask, every key), got [" + got + "]");
}

ShardPlan plan_pair(const AttentionParams& params, const RingShape& shape, const Segment& rows,
                    const Segment& keys) {
  const int64_t total = shape.total_rows();
  ShardPlan plan = plan_shard(params, shape.B, {rows.global, rows.length, total},
                              {keys.global, keys.length, total});
  std::erase_if(plan.calls, [&](const ShardCall& c) {
    return !sees_any(c.params, max_length(c.params.q_lens, rows.length),
                     max_length(c.params.kv_lens, keys.length));
  });
  for (ShardCall& c : plan.calls)
    c.params.mask = mask_block(params.mask, c.batch_begin, c.batch_count, rows.local, rows.length,
                               keys.global, keys.length);
  return plan;
}

}  // namespace xattn::dist
