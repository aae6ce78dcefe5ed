// One work item's state and the steps every tile layout shares: its rows and their visible key
// ranges, scratch carved from the thread's arena, K/V rows as f32, tile classification and the
// dense mask.

#if defined(XATTN_KERNELS_WORK_ITEM_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef XATTN_KERNELS_WORK_ITEM_INL_H_
#undef XATTN_KERNELS_WORK_ITEM_INL_H_
#else
#define XATTN_KERNELS_WORK_ITEM_INL_H_
#endif

#include <algorithm>
#include <cstdint>

#include "core/convert.h"
#include "core/partition.h"
#include "core/problem.h"
#include "core/scratch.h"
#include "core/visibility.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/bf16_dot-inl.h"
#include "kernels/convert-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr int64_t kKeysPerTile = 128;

inline int64_t lanes() { return static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>())); }
inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }
// A row length rounded up to whole vectors.
inline int64_t padded(int64_t n) { return round_up(n, lanes()); }

// Everything one work item touches. The layouts (row_lanes-inl.h, dim_lanes-inl.h) decide
// what q, scores and acc hold; each array is sized for either.
struct ItemState {
  const core::Problem* p = nullptr;
  const core::Sequence* seq = nullptr;
  int64_t b = 0, kv_head = 0;
  int64_t rows = 0;  // valid rows; the layout may pad beyond them
  int64_t br = 0;    // rows including padding
  float *q, *scores, *acc, *kbuf, *vbuf, *row_buf, *out_buf;
  float* mask_t = nullptr;  // a dense-mask tile shaped like scores, when there is a mask
  float* pairs = nullptr;   // bf16 probability pairs, when P·V runs in bf16
  float *m, *l, *alpha, *lo, *hi;
  int64_t *row_i, *row_h;  // per row: query index within the sequence, query head
  core::KeyRange* range;   // per row: visible keys
  int64_t inter_lo = 0, inter_hi = 0;  // keys every row sees (for the mask-free test)
  bool bf16_dot = false;  // Q·Kᵀ from bf16 pairs in place (bf16_dot-inl.h)
  bool bf16_pv = false;   // and P·V from bf16 probabilities (interior tiles of many rows)
  bool prefetch_kv = false;  // the decode layout prefetches K and V a tile ahead (dim_lanes-inl.h)
  int64_t key_end = 0;       // the item's keys end here, within its sequence
  // Where those prefetches go past key_end: the first keys of the item the thread runs next, where
  // that is known (count 0: none).
  struct NextKeys {
    int64_t b = 0, kv_head = 0, first = 0, count = 0;  // first: the row of K and V
  } next;

  void carve(core::Carver& c) {
    const int64_t D = padded(p->head_dim), Dv = padded(p->value_dim), K = kKeysPerTile;
    const int64_t row_len = std::max({D, Dv, K});
    q = c.take<float>(D * br), scores = c.take<float>(K * br), acc = c.take<float>(Dv * br);
    kbuf = c.take<float>(K * D), vbuf = c.take<float>(K * Dv);
    row_buf = c.take<float>(row_len), out_buf = c.take<float>(row_len);
    m = c.take<float>(br), l = c.take<float>(br), alpha = c.take<float>(br);
    lo = c.take<float>(br), hi = c.take<float>(br);
    row_i = c.take<int64_t>(br), row_h = c.take<int64_t>(br);
    range = c.take<core::KeyRange>(br);
    if (p->mask.present()) mask_t = c.take<float>(K * br);
    if (bf16_pv) pairs = c.take<float>(K / 2 * br);
  }

  // Makes row `by` the first, for a layout that runs on the rows from there (RowLanes'
  // boundary segments); shift_rows(-by) undoes it. Row strides stay br.
  void shift_rows(int64_t by) {
    for (float** a : {&q, &scores, &acc, &m, &l, &alpha, &lo, &hi}) *a += by;
    if (mask_t) mask_t += by;
    if (pairs) pairs += by;
    row_i += by, row_h += by, range += by;
    rows -= by;
  }
};

// The item's state, in `arena` (items run together each need their own).
inline void setup_item(const core::Problem& p, const core::WorkItem& w, int64_t br,
                       ItemState& s,
                       core::ScratchArena& arena = core::ScratchArena::for_this_thread()) {
  s.p = &p;
  s.seq = &p.sequences[w.seq];
  s.b = w.seq;
  s.kv_head = w.kv_head;
  s.key_end = w.key_end;
  s.next = {};
  s.rows = w.row_end - w.row_begin;
  s.br = br;
  s.bf16_dot = kHaveBf16Dot && p.q.dtype == DType::kBF16 && p.k.stride[3] == 1 &&
               p.head_dim % 2 == 0 && use_bf16_dot();
  s.bf16_pv = s.bf16_dot && p.bf16_probabilities && p.v.stride[3] == 1;
  core::Carver measure(nullptr);
  s.carve(measure);
  core::Carver carver(arena.bytes(measure.used()));
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

// Row r of Q as f32, unscaled: in place when Q is f32 with unit element stride, otherwise
// converted into buf.
inline const float* query_row(const ItemState& s, int64_t r, float* buf) {
  const core::Problem& p = *s.p;
  const core::Operand& q = p.q;
  const int64_t off = q.offset(s.b, s.row_h[r], s.seq->q_start + s.row_i[r], 0);
  if (q.dtype == DType::kF32 && q.stride[3] == 1) return static_cast<const float*>(q.data) + off;
  convert_row(core::element_ptr(q.data, q.dtype, off), q.dtype, q.stride[3], p.head_dim, buf);
  return buf;
}

// Prefetches the rows of `t` (Q, or the output laid out as Q) of item w's flattened query rows
// r = i·G + g. A read prefetch serves stores as well: the line comes in exclusive where no other
// core holds it. Inlined by force: GCC 12 takes a function that only prefetches for one without
// effects, and deletes the calls to it.
HWY_INLINE void prefetch_rows(const core::Problem& p, const core::Operand& t, int64_t width,
                              const core::WorkItem& w) {
  if (t.stride[3] != 1) return;
  constexpr uintptr_t kLine = 64;
  const int64_t G = p.group_size(), bytes = width * dtype_size(t.dtype);
  int64_t i = p.sequences[w.seq].q_start + w.row_begin / G, g = w.row_begin % G;
  for (int64_t flat = w.row_begin; flat < w.row_end; ++flat) {
    const auto row = reinterpret_cast<uintptr_t>(
        core::element_ptr(t.data, t.dtype, t.offset(w.seq, w.kv_head * G + g, i, 0)));
    for (uintptr_t line = row & ~(kLine - 1); line < row + bytes; line += kLine)
      hwy::Prefetch(reinterpret_cast<const char*>(line));
    if (++g == G) g = 0, ++i;  // the next flattened row, without a division per row
  }
}

struct Rows {
  const float* data;
  int64_t ld;  // elements between consecutive rows
};

// Rows l0 .. l0+nk of operand t at (b, h), as f32: in place when they already are f32 with
// unit element stride (and, if `whole_vectors`, a width of whole vectors), otherwise converted
// into `buf` with rows padded by zeros to whole vectors.
inline Rows operand_rows(const core::Operand& t, int64_t b, int64_t h, int64_t l0, int64_t width,
                         int64_t nk, float* buf, bool whole_vectors) {
  const int64_t off = t.offset(b, h, l0, 0);
  const int64_t ld = padded(width);
  if (t.dtype == DType::kF32 && t.stride[3] == 1 && (!whole_vectors || ld == width))
    return {static_cast<const float*>(t.data) + off, t.stride[2]};
  for (int64_t c = 0; c < nk; ++c) {
    convert_row(core::element_ptr(t.data, t.dtype, off + c * t.stride[2]), t.dtype, t.stride[3],
                width, buf + c * ld);
    std::fill(buf + c * ld + width, buf + (c + 1) * ld, 0.0f);
  }
  return {buf, ld};
}

// Rows c0 .. c0+nk of K or V of this item's kv head (operand_rows).
inline Rows key_rows(const ItemState& s, const core::Operand& t, int64_t width, int64_t c0,
                     int64_t nk, float* buf, bool whole_vectors) {
  return operand_rows(t, s.b, s.kv_head, s.seq->kv_start + c0, width, nk, buf, whole_vectors);
}

// Calls fn(rows, ld) with rows c0 .. c0+nk of K or V as whole vectors of width elements:
// 16-bit inputs as they are (const hwy::bfloat16_t* or const hwy::float16_t*, widened as they
// are loaded, see load_f32), f32 in place, anything else converted to f32 in `buf`.
template <class Fn>
void with_vector_rows(const ItemState& s, const core::Operand& t, int64_t width, int64_t c0,
                      int64_t nk, float* buf, const Fn& fn) {
  if (t.stride[3] == 1 && padded(width) == width && t.dtype != DType::kF32) {
    const void* rows = core::element_ptr(t.data, t.dtype, t.offset(s.b, s.kv_head, s.seq->kv_start + c0, 0));
    if (t.dtype == DType::kBF16) return fn(static_cast<const hwy::bfloat16_t*>(rows), t.stride[2]);
    if (t.dtype == DType::kF16) return fn(static_cast<const hwy::float16_t*>(rows), t.stride[2]);
  }
  const Rows r = key_rows(s, t, width, c0, nk, buf, true);
  fn(r.data, r.ld);
}

// One vector of f32 from `p`, widening 16-bit floats.
template <class D>
HWY_INLINE hn::Vec<D> load_f32(D d, const float* p) { return hn::LoadU(d, p); }
template <class D, class T>
HWY_INLINE hn::Vec<D> load_f32(D d, const T* p) {
  return hn::PromoteTo(d, hn::LoadU(hn::Rebind<T, D>(), p));
}

enum class TileKind { kSkip, kInterior, kBoundary };

// Skip: no row sees a key of [c0, c1). Interior: every row sees all of them, unmasked.
inline TileKind classify_tile(const ItemState& s, int64_t c0, int64_t c1) {
  bool any = false;
  for (int64_t r = 0; r < s.rows; ++r) any |= s.range[r].lo < c1 && s.range[r].hi > c0;
  if (!any) return TileKind::kSkip;
  const bool interior = !s.p->mask.present() && c0 >= s.inter_lo && c1 <= s.inter_hi;
  return interior ? TileKind::kInterior : TileKind::kBoundary;
}

// Calls fn(c0, nk, kind) for the key tiles of a work item that some row sees. A boundary tile
// whose leading keys every row sees (the diagonal tile of causal attention) is cut in two, so
// that only the keys that need masking pay for it.
template <class Fn>
void for_each_tile(const ItemState& s, int64_t key_begin, int64_t key_end, const Fn& fn) {
  for (int64_t c0 = key_begin; c0 < key_end; c0 += kKeysPerTile) {
    const int64_t c1 = std::min(c0 + kKeysPerTile, key_end);
    const TileKind kind = classify_tile(s, c0, c1);
    if (kind == TileKind::kSkip) continue;
    const int64_t cut = s.inter_hi;
    if (kind == TileKind::kBoundary && c0 < cut && cut < c1 &&
        classify_tile(s, c0, cut) == TileKind::kInterior) {
      fn(c0, cut - c0, TileKind::kInterior);
      fn(cut, c1 - cut, TileKind::kBoundary);
    } else {
      fn(c0, c1 - c0, kind);
    }
  }
}

// Each of br rows' visible interval relative to key c0, clamped to [-1, nk + 1] so that it is
// exact as a float, into lo and hi; rows from `rows` on (padding) see nothing.
inline void relative_ranges(const core::KeyRange* range, int64_t rows, int64_t br, int64_t c0,
                            int64_t nk, float* lo, float* hi) {
  const int64_t lim = nk + 1;
  for (int64_t r = 0; r < br; ++r) {
    const bool valid = r < rows;
    lo[r] = valid ? static_cast<float>(std::clamp<int64_t>(range[r].lo - c0, -1, lim)) : 0.0f;
    hi[r] = valid ? static_cast<float>(std::clamp<int64_t>(range[r].hi - c0, -1, lim)) : 0.0f;
  }
}
inline void relative_ranges(ItemState& s, int64_t c0, int64_t nk) {
  relative_ranges(s.range, s.rows, s.br, c0, nk, s.lo, s.hi);
}

// Row r's dense-mask values for keys c0 .. c0+nk as additive floats, in s.row_buf.
inline const float* mask_row(ItemState& s, int64_t r, int64_t c0, int64_t nk) {
  const core::Operand& mask = s.p->mask;
  const int64_t off = mask.offset(s.b, s.row_h[r], s.row_i[r], c0);
  core::load_mask_row(core::element_ptr(mask.data, mask.dtype, off), mask.dtype, mask.stride[3],
                      nk, s.row_buf);
  return s.row_buf;
}

// The dense mask of keys c0 .. c0+nk for rows (b, row_h[r], row_i[r]), r < rows, as additive
// floats in a tile laid out like the scores, mask_t [nk][br]; padding rows get 0. The mask's
// rows are row-major in memory: an f32 or bool mask with adjacent keys is read in place, a
// block of keys at a time so that the rows' lines and the tile's stay in L1 (a learned bias, as
// in CrossFormer's groups, is one on every tile); other masks are converted a row at a time
// through row_buf.
inline void gather_mask_tile(const core::Operand& m, int64_t b, const int64_t* row_h,
                             const int64_t* row_i, int64_t rows, int64_t br, int64_t c0,
                             int64_t nk, float* mask_t, float* row_buf) {
  if (rows < br) std::fill(mask_t, mask_t + nk * br, 0.0f);
  const auto transpose = [&](const auto* base, const auto& value) {
    constexpr int64_t kBlock = 16;
    for (int64_t b0 = 0; b0 < nk; b0 += kBlock)
      for (int64_t r = 0; r < rows; ++r) {
        const auto* row = base + m.offset(b, row_h[r], row_i[r], c0);
        for (int64_t c = b0; c < std::min(nk, b0 + kBlock); ++c) mask_t[c * br + r] = value(row[c]);
      }
  };
  if (m.dtype == DType::kF32 && m.stride[3] == 1) {
    transpose(static_cast<const float*>(m.data), [](float x) { return x; });
  } else if (m.dtype == DType::kBool && m.stride[3] == 1) {
    transpose(static_cast<const uint8_t*>(m.data),
              [](uint8_t x) { return x ? 0.0f : -__builtin_inff(); });
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t off = m.offset(b, row_h[r], row_i[r], c0);
      core::load_mask_row(core::element_ptr(m.data, m.dtype, off), m.dtype, m.stride[3], nk,
                          row_buf);
      for (int64_t c = 0; c < nk; ++c) mask_t[c * br + r] = row_buf[c];
    }
  }
}

// A dense mask on one score: bool false or float -inf masks the key, other floats add to the
// score; a score already masked stays -inf.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V apply_mask(D d, V score, V add) {
  const V neg_inf = hn::Set(d, -__builtin_inff());
  const auto masked = hn::Or(hn::Eq(score, neg_inf), hn::Eq(add, neg_inf));
  return hn::IfThenElse(masked, neg_inf, hn::Add(score, add));
}

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // XATTN_KERNELS_WORK_ITEM_INL_H_
