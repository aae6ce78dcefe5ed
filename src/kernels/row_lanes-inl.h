// The layout for many rows: each vector lane is one query row (Qt [D][Br], St [nk][Br],
// AccT [Dv][Br]). Every softmax step is vertical and K and V are read in their natural row
// layout, one broadcast element at a time. It wastes lanes when a work item has few rows; those
// go to dim_lanes-inl.h.

#if defined(XATTN_KERNELS_ROW_LANES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef XATTN_KERNELS_ROW_LANES_INL_H_
#undef XATTN_KERNELS_ROW_LANES_INL_H_
#else
#define XATTN_KERNELS_ROW_LANES_INL_H_
#endif

#include <algorithm>
#include <cstdint>

#include "hwy/highway.h"
#include "kernels/bf16_dot-inl.h"
#include "kernels/score_tile-inl.h"
#include "kernels/tile_kernels-inl.h"
#include "kernels/transpose-inl.h"
#include "kernels/work_item-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Calls fn(RowLanes<vecs>()) for 1 to 4 row vectors (the layout's register blocks hold up to 4;
// the count is a compile-time constant of the micro-kernels). Defined after RowLanes, which it
// names without depending on a template parameter.
template <class Fn>
void with_row_vectors(int64_t vecs, const Fn& fn);

template <int kVecs>
struct RowLanes {
  static_assert(kVecs >= 1 && kVecs <= 4, "register blocks of 1 to 4 row vectors");
  static constexpr int kRowVecs = kVecs;
  static int64_t padded_rows() { return kRowVecs * lanes(); }

  // Qt[d][r] = scale · Q[b, h_r, i_r, d], or for bf16 dot products Qp[i][r] = the pair
  // Q[.., 2i], Q[.., 2i+1] as bits (scaled later); padding rows are zero.
  static void pack_queries(ItemState& s) {
    const int64_t D = s.p->head_dim, N = lanes();
    if (s.bf16_dot) {
      std::fill(s.q, s.q + D * s.br, 0.0f);
      return pack_query_pairs(s);
    }
    // Padding rows are zeros: whole vectors of them here, the rest by pack_transposed.
    const int64_t covered = round_up(s.rows, N);
    for (int64_t d = 0; d < D && covered < s.br; ++d)
      std::fill(s.q + d * s.br + covered, s.q + (d + 1) * s.br, 0.0f);
    const float* rows[kMaxLanes];
    for (int64_t r0 = 0; r0 < s.rows; r0 += N) {  // a vector of rows (kbuf: their f32 copies)
      const int64_t n = std::min(N, s.rows - r0);
      for (int64_t r = 0; r < n; ++r) rows[r] = query_row(s, r0 + r, s.kbuf + r * padded(D));
      for (int64_t d0 = 0; d0 < D; d0 += N)
        pack_transposed(rows, n, d0, std::min(N, D - d0), s.p->scale, s.q + d0 * s.br + r0, s.br);
    }
  }

  static void begin(ItemState& s) {
    std::fill(s.m, s.m + s.br, -__builtin_inff());
    std::fill(s.l, s.l + s.br, 0.0f);
    std::fill(s.acc, s.acc + s.p->value_dim * s.br, 0.0f);
  }

  // St = scores of keys c0 .. c0+nk for every row, transformed and (boundary) masked.
  static void scores(ItemState& s, int64_t c0, int64_t nk, TileKind kind) {
    const core::Problem& p = *s.p;
    if (s.bf16_dot) {
      const core::Operand& k = p.k;
      const auto* rows = static_cast<const uint16_t*>(core::element_ptr(
          k.data, k.dtype, k.offset(s.b, s.kv_head, s.seq->kv_start + c0, 0)));
      pair_dot_tile<kRowVecs, false>(reinterpret_cast<const uint32_t*>(s.q), s.br,
                                     {rows, k.stride[2], 2}, nk, p.head_dim / 2, nullptr, p.scale,
                                     s.scores);
    } else {
      const Rows k = key_rows(s, p.k, p.head_dim, c0, nk, s.kbuf, false);
      qk_tile<kRowVecs>(s.q, s.br, k.data, k.ld, nk, p.head_dim, s.scores);
    }
    if (p.softcap > 0) softcap_tile<kRowVecs>(s.scores, s.br, nk, p.softcap);
    if (kind != TileKind::kBoundary) return;
    relative_ranges(s.range, s.rows, padded_rows(), c0, nk, s.lo, s.hi);
    range_mask_tile<kRowVecs>(s.scores, s.br, nk, s.lo, s.hi);
    if (p.mask.present()) mask_tile(s, c0, nk);
  }

  // A boundary tile of keys [c0, c0 + nk) without a dense mask, in segments by row vector: the
  // keys up to the last one vector j sees (and no row before it has run to) go to the vectors
  // from j on, fn(RowLanes<kRowVecs - j>(), key, count) on rows shifted to vector j. Rows see
  // keys up to a bound that grows with the row (causal, windows, lengths), so the keys past a
  // vector's last cost it nothing: on the causal diagonal of 64 rows, 156 vector-key steps
  // instead of 252.
  template <class Fn>
  static void by_row_vectors(ItemState& s, int64_t c0, int64_t nk, const Fn& fn) {
    const int64_t N = lanes(), c1 = c0 + nk;
    int64_t begin = c0;
    for (int j = 0; j < kRowVecs && j * N < s.rows; ++j) {
      int64_t end = begin;  // at least the bound of every row before
      for (int64_t r = j * N; r < std::min(s.rows, (j + 1) * N); ++r)
        end = std::max(end, std::min(c1, s.range[r].hi));
      if (end == begin) continue;
      s.shift_rows(j * N);
      with_row_vectors(kRowVecs - j, [&](auto tiles) { fn(tiles, begin, end - begin); });
      s.shift_rows(-j * N);
      begin = end;
    }
  }

  static void softmax(ItemState& s, int64_t nk) {
    online_softmax_tile<kRowVecs>(s.scores, s.br, nk, s.m, s.l, s.alpha);
  }

  static void weighted_sum(ItemState& s, int64_t c0, int64_t nk, TileKind kind) {
    const core::Problem& p = *s.p;
    const int64_t Dv = p.value_dim;
    // Boundary tiles stay in f32: a masked key's zero weight must skip its value row.
    if (s.bf16_pv && kind == TileKind::kInterior) return weighted_sum_bf16(s, c0, nk);
    const Rows v = key_rows(s, p.v, Dv, c0, nk, s.vbuf, false);
    // A masked key's zero weight times a finite value adds nothing, so the plain product is
    // exact unless the tile's values hold Inf or NaN; only then must zero weights be skipped,
    // at three instructions per product instead of one.
    if (kind == TileKind::kBoundary && !all_finite(v.data, v.ld, nk, Dv))
      pv_tile<kRowVecs, true>(s.acc, s.br, s.alpha, s.scores, v.data, v.ld, nk, Dv);
    else
      pv_tile<kRowVecs, false>(s.acc, s.br, s.alpha, s.scores, v.data, v.ld, nk, Dv);
  }

  // Weights output: p = e^(s - m)·(1/l) with each row's m in s.alpha and 1/l in s.l (0: none).
  static void normalized_probabilities(ItemState& s, int64_t nk) {
    normalized_probabilities_tile<kRowVecs>(s.scores, s.br, nk, s.alpha, s.l);
  }
  static void score_row(const ItemState& s, int64_t r, int64_t nk, float* out) {
    for (int64_t c = 0; c < nk; ++c) out[c] = s.scores[c * s.br + r];
  }

  // rows[r][e] = factor[r] · Σ p·v of row r0 + r, for r < n (at most a vector of rows;
  // factor has a vector's worth of entries).
  static void store_acc_rows(const ItemState& s, int64_t r0, int64_t n, const float* factor,
                             float* const* rows) {
    const int64_t Dv = s.p->value_dim, N = lanes();
    for (int64_t e0 = 0; e0 < Dv; e0 += N)
      unpack_transposed(s.acc + e0 * s.br + r0, s.br, factor, n, rows, e0, std::min(N, Dv - e0));
  }

 private:
  static void weighted_sum_bf16(ItemState& s, int64_t c0, int64_t nk) {
    const core::Problem& p = *s.p;
    const core::Operand& v = p.v;
    const int64_t ld = padded(p.value_dim);
    auto* pp = reinterpret_cast<uint32_t*>(s.pairs);
    auto* vp = reinterpret_cast<uint32_t*>(s.vbuf);
    pack_probability_pairs(s.scores, s.br, nk, pp);
    pack_value_pairs(static_cast<const uint16_t*>(core::element_ptr(
                         v.data, v.dtype, v.offset(s.b, s.kv_head, s.seq->kv_start + c0, 0))),
                     v.stride[2], nk, p.value_dim, vp, ld);
    pair_dot_tile<kRowVecs, true>(pp, s.br, {reinterpret_cast<const uint16_t*>(vp), 2, 2 * ld},
                                  p.value_dim, (nk + 1) / 2, s.alpha, 1.0f, s.acc);
  }

  static void pack_query_pairs(ItemState& s) {
    const core::Operand& q = s.p->q;
    auto* qp = reinterpret_cast<uint32_t*>(s.q);
    for (int64_t r = 0; r < s.rows; ++r) {
      const auto* row = static_cast<const uint16_t*>(core::element_ptr(
          q.data, q.dtype, q.offset(s.b, s.row_h[r], s.seq->q_start + s.row_i[r], 0)));
      for (int64_t i = 0; i < s.p->head_dim / 2; ++i)
        qp[i * s.br + r] = row[2 * i * q.stride[3]] | uint32_t{row[(2 * i + 1) * q.stride[3]]} << 16;
    }
  }

  static void mask_tile(ItemState& s, int64_t c0, int64_t nk) {
    gather_mask_tile(s.p->mask, s.b, s.row_h, s.row_i, s.rows, s.br, c0, nk, s.mask_t,
                     s.row_buf);
    const hn::ScalableTag<float> df;
    for (int64_t i = 0; i < nk * s.br; i += lanes()) {
      const auto score = hn::Load(df, s.scores + i);
      hn::Store(apply_mask(df, score, hn::Load(df, s.mask_t + i)), df, s.scores + i);
    }
  }
};

template <class Fn>
void with_row_vectors(int64_t vecs, const Fn& fn) {
  if (vecs <= 1) fn(RowLanes<1>());
  else if (vecs == 2) fn(RowLanes<2>());
  else if (vecs == 3) fn(RowLanes<3>());
  else fn(RowLanes<4>());
}

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // XATTN_KERNELS_ROW_LANES_INL_H_
