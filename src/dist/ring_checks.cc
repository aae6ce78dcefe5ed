#include "dist/ring_checks.h"

#include <algorithm>
#include <string>

#include "dist/agreement.h"
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
    {"window", "left", false},
    {"window", "right", false},
    {"diagonal_offset", "value", false},
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
  *x++ = p.window.left;
  *x++ = p.window.right;
  *x++ = p.diagonal_offset;
  *x++ = p.bf16_probabilities;
  *x++ = static_cast<int64_t>(layout);
}

// What a ring does not carry: a mask or lengths would have to travel with their keys.
void check_supported(const AttentionParams& params, RingLayout layout) {
  if (layout != RingLayout::kContiguous && layout != RingLayout::kZigzag)
    throw Error("layout: expected RingLayout::kContiguous or RingLayout::kZigzag, got " +
                std::to_string(static_cast<int>(layout)));
  if (params.mask.present())
    throw Error("mask: not supported by ring_attention (use causal, window or diagonal_offset)");
  if (!params.kv_lens.empty() || !params.q_lens.empty())
    throw Error(std::string(params.kv_lens.empty() ? "q_lens" : "kv_lens") +
                ": not supported by ring_attention (every row of the sequence is valid)");
}

// Self-attention: this rank's rows of Q, K and V are the same rows.
void check_rows(const TensorView& q, const TensorView& k) {
  if (k.size(2) != q.size(2))
    throw Error("k: dim 2 (rows) must equal q's on this rank (each rank holds the same rows of "
                "Q, K and V): expected " + std::to_string(q.size(2)) + ", got " +
                std::to_string(k.size(2)));
}

// The local call's params for the checks: top-left, since bottom-right is the same thing for
// self-attention over the whole sequence; diagonal_offset is placed per pair later.
AttentionParams local_params(const AttentionParams& params) {
  AttentionParams local = params;
  local.align = CausalAlign::kTopLeft;
  local.diagonal_offset = 0;
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
    check_supported(params, layout);
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
    check_supported(params, layout);
    if (grads.dmask.present()) throw Error("dmask: not supported by ring_attention_backward (no mask)");
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

AttentionParams pair_params(const AttentionParams& params, const Segment& rows,
                            const Segment& keys) {
  AttentionParams local = local_params(params);
  local.diagonal_offset = pair_offset(params, rows, keys);
  return local;
}

}  // namespace xattn::dist
