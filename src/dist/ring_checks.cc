#include "dist/ring_checks.h"

#include <algorithm>
#include <string>

#include "dist/agreement.h"
#include "dist/views.h"
#include "xattn/error.h"

namespace xattn::dist {
namespace {

// The output dtypes that must match: out and lse in the forward; out, dout, dq, dk, dv in the
// backward (-1 where an entry has no such argument).
struct Dtypes {
  int64_t out = -1, lse = -1, dout = -1, dq = -1, dk = -1, dv = -1;
};

constexpr FieldName kFields[] = {
    {"q", "B (batch)", false},
    {"q", "Hq (query heads)", false},
    {"q", "D (head dim)", false},
    {"k", "Hkv (key/value heads)", false},
    {"v", "Dv (value dim)", false},
    {"q", "dtype", false},
    {"out", "dtype", false},
    {"lse", "presence", false},
    {"dout", "dtype", false},
    {"dq", "dtype", false},
    {"dk", "dtype", false},
    {"dv", "dtype", false},
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
    {"mask", "presence", false},
    {"bf16_probabilities", "value", false},
    {"layout", "value", false},
};
static_assert(std::size(kFields) <= kMaxFields);

void fill_fields(RankReport& r, const TensorView& q, const TensorView& k, const TensorView& v,
                 const AttentionParams& p, RingLayout layout, const Dtypes& t) {
  int64_t* x = r.values;
  const bool q4 = q.rank() == 4, k4 = k.rank() == 4, v4 = v.rank() == 4;
  *x++ = q4 ? q.size(0) : -1;
  *x++ = q4 ? q.size(1) : -1;
  *x++ = q4 ? q.size(3) : -1;
  *x++ = k4 ? k.size(1) : -1;
  *x++ = v4 ? v.size(3) : -1;
  *x++ = static_cast<int64_t>(q.dtype);
  *x++ = t.out;
  *x++ = t.lse;
  *x++ = t.dout;
  *x++ = t.dq;
  *x++ = t.dk;
  *x++ = t.dv;
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
  *x++ = p.mask.present();
  *x++ = p.bf16_probabilities;
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
  Dtypes t;
  t.out = static_cast<int64_t>(outputs.out.dtype);
  t.lse = outputs.lse.present();
  fill_fields(mine, q, k, v, params, layout, t);
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
  Dtypes t;
  t.out = static_cast<int64_t>(out.dtype);
  t.lse = lse.present();
  t.dout = static_cast<int64_t>(dout.dtype);
  t.dq = static_cast<int64_t>(grads.dq.dtype);
  t.dk = static_cast<int64_t>(grads.dk.dtype);
  t.dv = static_cast<int64_t>(grads.dv.dtype);
  fill_fields(mine, q, k, v, params, layout, t);
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
