// The tiled, single-pass forward (FlashAttention-2 style), compiled once per SIMD target.
//
//   for each work item (sequence, kv head, block of query rows of all G heads in the group):
//     for each key tile the rows can see:
//       St = Qt·Kᵀ → softcap → masks (boundary tiles only) → online softmax → AccT += V·Pt
//     finalize: out = acc / l, lse = m + log l   (or store the partial state of a key split)

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/forward.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/convert.h"
#include "core/parallel.h"
#include "core/partition.h"
#include "core/scratch.h"
#include "core/softmax_state.h"
#include "core/visibility.h"
#include "hwy/highway.h"
#include "kernels/convert-inl.h"
#include "kernels/forward.h"
#include "kernels/score_tile-inl.h"
#include "kernels/tile_kernels-inl.h"
#include "kernels/vector_exp-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace {

using core::Operand;
using core::Problem;
using core::WorkItem;

constexpr int kMaxRowVecs = 4;
constexpr int64_t kKeysPerTile = 64;

int64_t lanes() { return static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>())); }
int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Everything one work item touches, carved from the thread's arena.
struct ItemState {
  const Problem* p = nullptr;
  const core::Sequence* seq = nullptr;
  int64_t b = 0, kv_head = 0;
  int64_t rows = 0;  // valid rows; lanes beyond them are padding
  int64_t br = 0;    // rows rounded up to whole vectors
  float *qt, *st, *acct, *kbuf, *vbuf, *row_buf, *out_buf;
  float *m, *l, *alpha, *lo, *hi;
  int64_t *row_i, *row_h;  // per row: query index within the sequence, query head
  core::KeyRange* range;   // per row: visible keys
  int64_t inter_lo = 0, inter_hi = 0;  // keys every row sees (for the mask-free test)

  void carve(core::Carver& c) {
    const int64_t D = p->head_dim, Dv = p->value_dim, K = kKeysPerTile;
    const int64_t row_len = std::max({D, Dv, K});
    qt = c.take<float>(D * br), st = c.take<float>(K * br), acct = c.take<float>(Dv * br);
    kbuf = c.take<float>(K * round_up(D, 16)), vbuf = c.take<float>(K * round_up(Dv, 16));
    row_buf = c.take<float>(row_len), out_buf = c.take<float>(row_len);
    m = c.take<float>(br), l = c.take<float>(br), alpha = c.take<float>(br);
    lo = c.take<float>(br), hi = c.take<float>(br);
    row_i = c.take<int64_t>(br), row_h = c.take<int64_t>(br);
    range = c.take<core::KeyRange>(br);
  }
};

void setup_item(const Problem& p, const WorkItem& w, int64_t br, ItemState& s) {
  s.p = &p;
  s.seq = &p.sequences[w.seq];
  s.b = w.seq;
  s.kv_head = w.kv_head;
  s.rows = w.row_end - w.row_begin;
  s.br = br;
  core::Carver measure(nullptr);
  s.carve(measure);
  core::Carver carver(core::ScratchArena::for_this_thread().bytes(measure.used()));
  s.carve(carver);
  const int64_t G = p.group_size();
  s.inter_lo = 0;
  s.inter_hi = s.seq->kv_len;
  for (int64_t r = 0; r < s.rows; ++r) {
    const int64_t flat = w.row_begin + r;
    s.row_i[r] = flat / G;
    s.row_h[r] = w.kv_head * G + flat % G;
    s.range[r] = core::visible_keys(p, *s.seq, s.row_i[r]);
    s.inter_lo = std::max(s.inter_lo, s.range[r].lo);
    s.inter_hi = std::min(s.inter_hi, s.range[r].hi);
  }
}

// Qt[d][r] = scale · Q[b, h_r, i_r, d]; padding rows are zero.
void pack_queries(ItemState& s) {
  const Problem& p = *s.p;
  const int64_t D = p.head_dim;
  std::fill(s.qt, s.qt + D * s.br, 0.0f);
  for (int64_t r = 0; r < s.rows; ++r) {
    const int64_t off = p.q.offset(s.b, s.row_h[r], s.seq->q_start + s.row_i[r], 0);
    convert_row(core::element_ptr(p.q.data, p.q.dtype, off), p.q.dtype, p.q.stride[3], D,
                s.row_buf);
    for (int64_t d = 0; d < D; ++d) s.qt[d * s.br + r] = p.scale * s.row_buf[d];
  }
}

struct Rows {
  const float* data;
  int64_t ld;  // elements between consecutive rows
};

// Rows c0 .. c0+nk of K or V of this item's kv head, as f32: in place when they already are
// f32 with unit element stride, otherwise converted into `buf`.
Rows key_rows(const ItemState& s, const Operand& t, int64_t width, int64_t c0, int64_t nk,
              float* buf) {
  const int64_t off = t.offset(s.b, s.kv_head, s.seq->kv_start + c0, 0);
  if (t.dtype == DType::kF32 && t.stride[3] == 1)
    return {static_cast<const float*>(t.data) + off, t.stride[2]};
  const int64_t ld = round_up(width, 16);
  for (int64_t c = 0; c < nk; ++c)
    convert_row(core::element_ptr(t.data, t.dtype, off + c * t.stride[2]), t.dtype, t.stride[3],
                width, buf + c * ld);
  return {buf, ld};
}

enum class TileKind { kSkip, kInterior, kBoundary };

TileKind classify_tile(const ItemState& s, int64_t c0, int64_t c1) {
  bool any = false;
  for (int64_t r = 0; r < s.rows; ++r)
    any |= s.range[r].lo < c1 && s.range[r].hi > c0;
  if (!any) return TileKind::kSkip;
  const bool interior = !s.p->mask.present() && c0 >= s.inter_lo && c1 <= s.inter_hi;
  return interior ? TileKind::kInterior : TileKind::kBoundary;
}

// Boundary tiles: keys outside each row's interval become -inf, then the dense mask applies
// (bool false or float -inf masks a key; other floats are added to visible scores).
template <int kRowVecs>
void mask_tile(ItemState& s, int64_t c0, int64_t nk) {
  const int64_t lim = nk + 1;
  for (int64_t r = 0; r < s.br; ++r) {
    const bool valid = r < s.rows;
    s.lo[r] = valid ? static_cast<float>(std::clamp<int64_t>(s.range[r].lo - c0, -1, lim)) : 0.0f;
    s.hi[r] = valid ? static_cast<float>(std::clamp<int64_t>(s.range[r].hi - c0, -1, lim)) : 0.0f;
  }
  range_mask_tile<kRowVecs>(s.st, s.br, nk, s.lo, s.hi);
  const Operand& mask = s.p->mask;
  if (!mask.present()) return;
  for (int64_t r = 0; r < s.rows; ++r) {
    const int64_t off = mask.offset(s.b, s.row_h[r], s.row_i[r], c0);
    core::load_mask_row(core::element_ptr(mask.data, mask.dtype, off), mask.dtype, mask.stride[3],
                        nk, s.row_buf);
    for (int64_t c = 0; c < nk; ++c) {
      float& score = s.st[c * s.br + r];
      if (score == -__builtin_inff()) continue;
      const float add = s.row_buf[c];
      score = add == -__builtin_inff() ? add : score + add;
    }
  }
}

// St = scores of keys c0 .. c0+nk for every row, transformed and (boundary) masked.
template <int kRowVecs>
void score_tile(ItemState& s, int64_t c0, int64_t nk, TileKind kind) {
  const Problem& p = *s.p;
  const Rows k = key_rows(s, p.k, p.head_dim, c0, nk, s.kbuf);
  qk_tile<kRowVecs>(s.qt, s.br, k.data, k.ld, nk, p.head_dim, s.st);
  if (p.softcap > 0) softcap_tile<kRowVecs>(s.st, s.br, nk, p.softcap);
  if (kind == TileKind::kBoundary) mask_tile<kRowVecs>(s, c0, nk);
}

// The online-softmax pass over this item's keys; leaves m, l and AccT in the item state.
template <int kRowVecs>
void accumulate(ItemState& s, const WorkItem& w) {
  const Problem& p = *s.p;
  const int64_t Dv = p.value_dim;
  std::fill(s.m, s.m + s.br, -__builtin_inff());
  std::fill(s.l, s.l + s.br, 0.0f);
  std::fill(s.acct, s.acct + Dv * s.br, 0.0f);
  for (int64_t c0 = w.key_begin; c0 < w.key_end; c0 += kKeysPerTile) {
    const int64_t nk = std::min(kKeysPerTile, w.key_end - c0);
    const TileKind kind = classify_tile(s, c0, c0 + nk);
    if (kind == TileKind::kSkip) continue;
    score_tile<kRowVecs>(s, c0, nk, kind);
    online_softmax_tile<kRowVecs>(s.st, s.br, nk, s.m, s.l, s.alpha);
    const Rows v = key_rows(s, p.v, Dv, c0, nk, s.vbuf);
    if (kind == TileKind::kBoundary)
      pv_tile<kRowVecs, true>(s.acct, s.br, s.alpha, s.st, v.data, v.ld, nk, Dv);
    else
      pv_tile<kRowVecs, false>(s.acct, s.br, s.alpha, s.st, v.data, v.ld, nk, Dv);
  }
}

// Slot layout for a key split's partial state: m[rows], l[rows], acc[rows][Dv].
struct PartialStates {
  float* data = nullptr;
  int64_t rows = 0, value_dim = 0;
  float* slot(int64_t i) const { return data + i * rows * (value_dim + 2); }
};

void store_result_row(const Problem& p, const ItemState& s, int64_t r, const core::SoftmaxState& st,
                      const float* acc, float* out_buf) {
  const float lse = core::finalize_row(st, acc, out_buf, p.value_dim);
  const int64_t h = s.row_h[r], i = s.seq->q_start + s.row_i[r];
  core::store_row(out_buf, p.value_dim,
                  core::element_ptr(const_cast<void*>(p.out.data), p.out.dtype,
                                    p.out.offset(s.b, h, i, 0)),
                  p.out.dtype, p.out.stride[3]);
  if (p.lse.present())
    static_cast<float*>(const_cast<void*>(p.lse.data))[p.lse.offset(s.b, h, i, 0)] = lse;
}

template <int kRowVecs>
void run_item(const Problem& p, const WorkItem& w, const PartialStates& partials) {
  ItemState s;
  setup_item(p, w, kRowVecs * lanes(), s);
  pack_queries(s);
  accumulate<kRowVecs>(s, w);
  const int64_t Dv = p.value_dim;
  if (w.num_splits > 1) {
    float* slot = partials.slot(w.partial_slot + w.split);
    for (int64_t r = 0; r < s.rows; ++r) {
      slot[r] = s.m[r];
      slot[partials.rows + r] = s.l[r];
      float* acc = slot + 2 * partials.rows + r * Dv;
      for (int64_t e = 0; e < Dv; ++e) acc[e] = s.acct[e * s.br + r];
    }
    return;
  }
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int64_t e = 0; e < Dv; ++e) s.row_buf[e] = s.acct[e * s.br + r];
    store_result_row(p, s, r, {s.m[r], s.l[r]}, s.row_buf, s.out_buf);
  }
}

// Merges a split row tile's partial states in split order, then stores the results.
void merge_splits(const Problem& p, const WorkItem& w, const PartialStates& partials) {
  ItemState s;
  setup_item(p, w, kMaxRowVecs * lanes(), s);
  const int64_t Dv = p.value_dim;
  for (int64_t r = 0; r < s.rows; ++r) {
    core::SoftmaxState total;
    std::fill(s.row_buf, s.row_buf + Dv, 0.0f);
    for (int32_t k = 0; k < w.num_splits; ++k) {
      const float* slot = partials.slot(w.partial_slot + k);
      const core::SoftmaxState part{slot[r], slot[partials.rows + r]};
      core::merge_into(total, s.row_buf, part, slot + 2 * partials.rows + r * Dv, Dv);
    }
    store_result_row(p, s, r, total, s.row_buf, s.out_buf);
  }
}

// The probabilities output: a second pass that recomputes each score tile and normalises it
// with the row's final log-sum-exp, p = e^(s - lse). Unseen keys get 0.
template <int kRowVecs>
void weights_item(const Problem& p, const WorkItem& w) {
  ItemState s;
  setup_item(p, w, kRowVecs * lanes(), s);
  pack_queries(s);
  const Operand& W = p.weights;
  void* wdata = const_cast<void*>(W.data);
  std::fill(s.row_buf, s.row_buf + kKeysPerTile, 0.0f);
  for (int64_t r = 0; r < s.br; ++r) {
    s.alpha[r] = -__builtin_inff();  // the rows' lse, -inf for padding
    if (r >= s.rows) continue;
    const int64_t h = s.row_h[r], i = s.seq->q_start + s.row_i[r];
    s.alpha[r] = static_cast<const float*>(p.lse.data)[p.lse.offset(s.b, h, i, 0)];
    for (int64_t c0 = 0; c0 < p.weights_cols; c0 += kKeysPerTile)
      core::store_row(s.row_buf, std::min(kKeysPerTile, p.weights_cols - c0),
                      core::element_ptr(wdata, W.dtype, W.offset(s.b, h, i, c0)), W.dtype,
                      W.stride[3]);
  }
  for (int64_t c0 = w.key_begin; c0 < w.key_end; c0 += kKeysPerTile) {
    const int64_t nk = std::min(kKeysPerTile, w.key_end - c0);
    const TileKind kind = classify_tile(s, c0, c0 + nk);
    if (kind == TileKind::kSkip) continue;
    score_tile<kRowVecs>(s, c0, nk, kind);
    normalized_probabilities_tile<kRowVecs>(s.st, s.br, nk, s.alpha);
    for (int64_t r = 0; r < s.rows; ++r) {
      for (int64_t c = 0; c < nk; ++c) s.out_buf[c] = s.st[c * s.br + r];
      const int64_t off = W.offset(s.b, s.row_h[r], s.seq->q_start + s.row_i[r], c0);
      core::store_row(s.out_buf, nk, core::element_ptr(wdata, W.dtype, off), W.dtype, W.stride[3]);
    }
  }
}

// Rows i in [q_len, q_rows) (dense q_lens) see nothing: out = 0, lse = -inf, weights = 0.
void zero_inactive_rows(const Problem& p) {
  std::vector<float> zeros(std::max(p.value_dim, p.weights_cols), 0.0f);
  for (int64_t b = 0; b < p.batch; ++b) {
    const core::Sequence& s = p.sequences[b];
    for (int64_t h = 0; h < p.heads_q; ++h)
      for (int64_t i = s.q_start + s.q_len; i < s.q_start + s.q_rows; ++i) {
        void* out = const_cast<void*>(p.out.data);
        core::store_row(zeros.data(), p.value_dim,
                        core::element_ptr(out, p.out.dtype, p.out.offset(b, h, i, 0)),
                        p.out.dtype, p.out.stride[3]);
        if (p.lse.present())
          static_cast<float*>(const_cast<void*>(p.lse.data))[p.lse.offset(b, h, i, 0)] =
              core::kNegInf;
        if (p.weights.present()) {
          void* w = const_cast<void*>(p.weights.data);
          core::store_row(zeros.data(), p.weights_cols,
                          core::element_ptr(w, p.weights.dtype, p.weights.offset(b, h, i, 0)),
                          p.weights.dtype, p.weights.stride[3]);
        }
      }
  }
}

// Picks the row-vector count (a compile-time constant of the micro-kernels) for an item.
template <class Fn>
void with_row_vecs(const WorkItem& w, const Fn& fn) {
  const int64_t vecs = (w.row_end - w.row_begin + lanes() - 1) / lanes();
  if (vecs <= 1) fn(std::integral_constant<int, 1>());
  else if (vecs <= 2) fn(std::integral_constant<int, 2>());
  else fn(std::integral_constant<int, kMaxRowVecs>());
}

}  // namespace

void Forward(const Problem& problem) {
  const int threads = core::resolve_threads(problem.num_threads);
  const core::TileShape tile{kMaxRowVecs * lanes(), kKeysPerTile};

  // The weights pass needs every row's lse; keep it internally when the caller did not ask.
  Problem p = problem;
  std::vector<float> lse_buffer;
  if (p.weights.present() && !p.lse.present()) {
    int64_t rows = 0;
    for (const core::Sequence& s : p.sequences) rows = std::max(rows, s.q_start + s.q_rows);
    lse_buffer.resize(p.batch * p.heads_q * rows);
    p.lse = {lse_buffer.data(), DType::kF32, {p.heads_q * rows, rows, 1, 0}};
  }

  zero_inactive_rows(p);
  const core::WorkPlan plan = core::plan_work(p, tile, threads);
  std::vector<float> partial_buffer(plan.partial_slots * tile.rows * (p.value_dim + 2));
  const PartialStates partials{partial_buffer.data(), tile.rows, p.value_dim};
  core::parallel_for(static_cast<int64_t>(plan.items.size()), threads, [&](int64_t i) {
    const WorkItem& w = plan.items[i];
    with_row_vecs(w, [&](auto vecs) { run_item<decltype(vecs)::value>(p, w, partials); });
  });
  core::parallel_for(static_cast<int64_t>(plan.merges.size()), threads,
                     [&](int64_t i) { merge_splits(p, plan.merges[i], partials); });

  if (p.weights.present()) {
    const core::WorkPlan rows_only = core::plan_work(p, tile, 1);
    core::parallel_for(static_cast<int64_t>(rows_only.items.size()), threads, [&](int64_t i) {
      const WorkItem& w = rows_only.items[i];
      with_row_vecs(w, [&](auto vecs) { weights_item<decltype(vecs)::value>(p, w); });
    });
  }
}

void VectorExpArray(const float* in, float* out, int64_t n) {
  const hn::ScalableTag<float> df;
  const int64_t N = lanes();
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(VectorExp(df, hn::LoadU(df, in + i)), df, out + i);
  if (i < n) {
    alignas(64) float tail[64] = {};  // more than any target's lanes
    std::copy(in + i, in + n, tail);
    hn::Store(VectorExp(df, hn::Load(df, tail)), df, tail);
    std::copy(tail, tail + (n - i), out + i);
  }
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace xattn::kernels {

HWY_EXPORT(Forward);
HWY_EXPORT(VectorExpArray);
HWY_EXPORT(TargetName);

void run_forward(const core::Problem& p) { HWY_DYNAMIC_DISPATCH(Forward)(p); }
void vector_exp(const float* in, float* out, int64_t n) {
  HWY_DYNAMIC_DISPATCH(VectorExpArray)(in, out, n);
}
const char* dispatched_target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

}  // namespace xattn::kernels
#endif
