// The layout for few rows, such as a decoder step (Lq·G of a few rows): vectors run along the
// head dimension for Q, K, V and the accumulator, and along the keys for the scores:
//   q   [R][D']   scaled queries, rows padded with zeros to whole vectors (D')
//   K   [nk][D']  key rows, in place (f32, or 16-bit widened as loaded) or converted
//   S   [R][64]   scores, later probabilities, of this key tile
//   V   [nk][Dv'] value rows, in place or converted
//   acc [R][Dv']  running Σ p·v
// Every lane does useful work however few rows there are, so K and V stream at memory speed.
// The price is a horizontal sum per score, paid once per N keys by a transpose-and-add tree.

#if defined(XATTN_KERNELS_DIM_LANES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef XATTN_KERNELS_DIM_LANES_INL_H_
#undef XATTN_KERNELS_DIM_LANES_INL_H_
#else
#define XATTN_KERNELS_DIM_LANES_INL_H_
#endif

#include <algorithm>
#include <cstdint>

#include "hwy/cache_control.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kernels/tile_kernels-inl.h"
#include "kernels/vector_exp-inl.h"
#include "kernels/work_item-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Lane c of the result = the sum of the lanes of v[c], for N = MaxLanes vectors v[0..N): a
// transpose-and-add tree, log2(N) steps, instead of N horizontal sums.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V sum_each(D d, const V* v) {
  constexpr size_t N = hn::MaxLanes(D());
#if HWY_TARGET != HWY_SCALAR
  // Within each 128-bit block: four vectors become one holding their four block sums.
  const hn::RepartitionToWide<D> dd;
  auto pair = [&](V a, V b) {  // per block: a0+a2, b0+b2, a1+a3, b1+b3
    return hn::Add(hn::InterleaveLower(d, a, b), hn::InterleaveUpper(d, a, b));
  };
  auto quad = [&](const V* x) {
    const auto ab = hn::BitCast(dd, pair(x[0], x[1])), ce = hn::BitCast(dd, pair(x[2], x[3]));
    return hn::Add(hn::BitCast(d, hn::InterleaveLower(dd, ab, ce)),
                   hn::BitCast(d, hn::InterleaveUpper(dd, ab, ce)));
  };
  // Then across blocks: the two halves first ...
  auto halves = [&](V lo, V hi) {
    return hn::Add(hn::ConcatLowerLower(d, hi, lo), hn::ConcatUpperUpper(d, hi, lo));
  };
  if constexpr (N == 4) {
    return quad(v);
  } else if constexpr (N == 8) {
    return halves(quad(v), quad(v + 4));
  }
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  else if constexpr (N == 16) {
    // ... then, with four blocks, neighbouring blocks: x0 holds [q0 b0+b2, q0 b1+b3, q1 b0+b2,
    // q1 b1+b3] for the quads q0, q1 of v[0..8); x1 likewise for v[8..16).
    const V x0 = halves(quad(v), quad(v + 4)), x1 = halves(quad(v + 8), quad(v + 12));
    const V even{_mm512_shuffle_f32x4(x0.raw, x1.raw, _MM_SHUFFLE(2, 0, 2, 0))};
    const V odd{_mm512_shuffle_f32x4(x0.raw, x1.raw, _MM_SHUFFLE(3, 1, 3, 1))};
    return hn::Add(even, odd);
  }
#endif
  else
#endif
  {
    alignas(64) float sums[N];
    for (size_t c = 0; c < N; ++c) sums[c] = hn::GetLane(hn::SumOfLanes(d, v[c]));
    return hn::Load(d, sums);
  }
}

// The rows of K or V one tile ahead of the tile being computed, prefetched key by key as the
// tile's own keys are read, where K and V come from memory (ItemState::prefetch_kv). A
// decoder step reads each K and V byte once; with a group of query heads per kv head it
// computes long enough per key that the hardware prefetchers alone left a thread far below the
// read bandwidth (an Intel Xeon, 2 threads: 39-58% of it with 4 or 8 heads per kv head, against
// 73-89% with one). Where K and V fit in the caches, the prefetches only cost: 1.10x the time
// on whisper-decode and crossvit-cls.
class RowsAhead {
 public:
  RowsAhead() = default;  // none
  // Rows of operand t from key `from` of the item's sequence, up to the item's last key; from
  // there on, the first rows of the item the thread runs next (ItemState::next).
  RowsAhead(const ItemState& s, const core::Operand& t, int64_t width, int64_t from) {
    if (!s.prefetch_kv) return;
    int64_t b = s.b, kv_head = s.kv_head, row = s.seq->kv_start + from;
    count_ = s.key_end - from;
    if (count_ <= 0) {
      b = s.next.b, kv_head = s.next.kv_head, row = s.next.first;
      count_ = s.next.count;
    }
    if (count_ <= 0) return;
    const int64_t size = dtype_size(t.dtype);
    first_ = static_cast<const char*>(
        core::element_ptr(t.data, t.dtype, t.offset(b, kv_head, row, 0)));
    row_bytes_ = ((width - 1) * t.stride[3] + 1) * size;
    stride_bytes_ = t.stride[2] * size;
  }
  HWY_INLINE void prefetch(int64_t c) const {
    if (c >= count_) return;
    const char* row = first_ + c * stride_bytes_;
    for (int64_t b = 0; b < row_bytes_; b += 64) hwy::Prefetch(row + b);
  }

 private:
  const char* first_ = nullptr;
  int64_t count_ = 0, row_bytes_ = 0, stride_bytes_ = 0;
};

// S[r][c] = Σ_d q[r][d] · K[c][d] for the kRows rows and the n <= N keys of one block, with
// the q and K rows `dvecs` whole vectors long; lanes c >= n of the results are 0. Key by key,
// so K streams through memory in order, each K vector loaded once for all rows; key c
// prefetches ahead's row first + c. (Two to fifteen keys a step, each q vector loaded serving
// them all, measured within the host's noise of one key a step.)
template <int kRows, typename T>
HWY_INLINE void qk_block(const float* HWY_RESTRICT q, int64_t ldq, int64_t dvecs,
                         const T* HWY_RESTRICT k, int64_t ldk, int64_t n,
                         float* HWY_RESTRICT s, int64_t lds,
                         const RowsAhead& ahead = RowsAhead(), int64_t first = 0) {
  const DF df;
  constexpr int64_t N = hn::MaxLanes(DF());
  VF acc[kRows][N];
  for (int64_t c = 0; c < n; ++c) {
    if constexpr (kRows > 1) ahead.prefetch(first + c);  // one row: none (rows_ahead)
    VF a[kRows];
    for (int r = 0; r < kRows; ++r) a[r] = hn::Zero(df);
    for (int64_t j = 0; j < dvecs; ++j) {
      const VF kv = load_f32(df, k + c * ldk + j * N);
      for (int r = 0; r < kRows; ++r) a[r] = hn::MulAdd(hn::Load(df, q + r * ldq + j * N), kv, a[r]);
    }
    for (int r = 0; r < kRows; ++r) acc[r][c] = a[r];
  }
  for (int r = 0; r < kRows; ++r) {
    for (int64_t c = n; c < N; ++c) acc[r][c] = hn::Zero(df);
    hn::Store(sum_each(df, acc[r]), df, s + r * lds);
  }
}

// Keys outside [lo, hi) of one row of scores become -inf (n whole vectors).
HWY_INLINE void limit_keys(float* HWY_RESTRICT s, int64_t n, float lo, float hi) {
  const DF df;
  const int64_t N = lanes();
  const VF neg_inf = hn::Set(df, -__builtin_inff()), vlo = hn::Set(df, lo), vhi = hn::Set(df, hi);
  for (int64_t c = 0; c < n; c += N) {
    const VF key = hn::Iota(df, static_cast<float>(c));
    const auto visible = hn::And(hn::Ge(key, vlo), hn::Lt(key, vhi));
    hn::Store(hn::IfThenElse(visible, hn::Load(df, s + c), neg_inf), df, s + c);
  }
}

template <int kRows>
struct DimLanes {
  static int64_t padded_rows() { return kRows; }

  static void pack_queries(ItemState& s) {
    const int64_t D = s.p->head_dim, ld = padded(D);
    std::fill(s.q, s.q + kRows * ld, 0.0f);
    for (int64_t r = 0; r < s.rows; ++r) {
      const float* row = query_row(s, r, s.row_buf);
      for (int64_t d = 0; d < D; ++d) s.q[r * ld + d] = s.p->scale * row[d];
    }
  }

  static void begin(ItemState& s) {
    std::fill(s.m, s.m + kRows, -__builtin_inff());
    std::fill(s.l, s.l + kRows, 0.0f);
    std::fill(s.alpha, s.alpha + kRows, 0.0f);  // padding rows keep a zero accumulator
    std::fill(s.acc, s.acc + kRows * padded(s.p->value_dim), 0.0f);
    std::fill(s.scores, s.scores + kRows * kKeysPerTile, 0.0f);
  }

  // S = scores of keys c0 .. c0+nk for every row, transformed and masked; keys past nk and
  // (boundary tiles) keys a row does not see become -inf.
  static void scores(ItemState& s, int64_t c0, int64_t nk, TileKind kind) {
    const core::Problem& p = *s.p;
    const int64_t n = padded(nk), dvecs = padded(p.head_dim) / lanes();
    const RowsAhead ahead = rows_ahead(s, p.k, p.head_dim, c0);
    with_vector_rows(s, p.k, p.head_dim, c0, nk, s.kbuf, [&](const auto* k, int64_t ldk) {
      for (int64_t b = 0; b < nk; b += lanes())
        qk_block<kRows>(s.q, padded(p.head_dim), dvecs, k + b * ldk, ldk,
                        std::min(lanes(), nk - b), s.scores + b, kKeysPerTile, ahead, b);
    });
    if (kind == TileKind::kBoundary) relative_ranges(s, c0, nk);
    for (int64_t r = 0; r < s.rows; ++r) {
      float* row = s.scores + r * kKeysPerTile;
      if (p.softcap > 0) softcap(row, n, p.softcap);
      if (kind == TileKind::kBoundary) {
        limit_keys(row, n, s.lo[r], std::min(s.hi[r], static_cast<float>(nk)));
        if (p.mask.present()) mask(s, r, c0, nk, row);
      } else if (n != nk) {
        limit_keys(row, n, 0.0f, static_cast<float>(nk));
      }
    }
  }

  // Per row: m' = max(m, max_c s_c), alpha = e^(m - m'), p_c = e^(s_c - m'), l' = alpha·l + Σ p.
  // A row that has seen only -inf keeps m = -inf and takes 0 as its exponent base.
  static void softmax(ItemState& s, int64_t nk) {
    const DF df;
    const int64_t N = lanes(), n = padded(nk);
    for (int64_t r = 0; r < s.rows; ++r) {
      float* row = s.scores + r * kKeysPerTile;
      VF vmax = hn::Set(df, -__builtin_inff());
      for (int64_t c = 0; c < n; c += N) vmax = hn::Max(vmax, hn::Load(df, row + c));
      const float m_old = s.m[r];
      const float m_new = std::max(m_old, hn::GetLane(hn::MaxOfLanes(df, vmax)));
      const VF base = hn::Set(df, m_new == -__builtin_inff() ? 0.0f : m_new);
      VF sum = hn::Zero(df);
      for (int64_t c = 0; c < n; c += N) {
        const VF e = VectorExp<true>(df, hn::Sub(hn::Load(df, row + c), base));
        hn::Store(e, df, row + c);
        sum = hn::Add(sum, e);
      }
      const float a = hn::GetLane(VectorExp(df, hn::Sub(hn::Set(df, m_old), base)));
      s.l[r] = a * s.l[r] + hn::GetLane(hn::SumOfLanes(df, sum));
      s.m[r] = m_new;
      s.alpha[r] = a;
    }
  }

  static void weighted_sum(ItemState& s, int64_t c0, int64_t nk, TileKind kind) {
    const core::Problem& p = *s.p;
    const RowsAhead ahead = rows_ahead(s, p.v, p.value_dim, c0);
    with_vector_rows(s, p.v, p.value_dim, c0, nk, s.vbuf, [&](const auto* v, int64_t ldv) {
      if (kind == TileKind::kBoundary) pv<true>(s, v, ldv, nk, ahead);
      else pv<false>(s, v, ldv, nk, ahead);
    });
  }

  // Weights output: p = e^(s - m)·(1/l) with each row's m in s.alpha and 1/l in s.l (0: none).
  static void normalized_probabilities(ItemState& s, int64_t nk) {
    const DF df;
    for (int64_t r = 0; r < s.rows; ++r) {
      float* row = s.scores + r * kKeysPerTile;
      const VF m = hn::Set(df, s.alpha[r]), inv_l = hn::Set(df, s.l[r]);
      for (int64_t c = 0; c < nk; c += lanes()) {
        const VF p = hn::Mul(VectorExp<true>(df, hn::Sub(hn::Load(df, row + c), m)), inv_l);
        hn::Store(s.l[r] == 0.0f ? hn::Zero(df) : p, df, row + c);
      }
    }
  }
  static void score_row(const ItemState& s, int64_t r, int64_t nk, float* out) {
    std::copy(s.scores + r * kKeysPerTile, s.scores + r * kKeysPerTile + nk, out);
  }

  // rows[r][e] = factor[r] · Σ p·v of row r0 + r, for r < n.
  static void store_acc_rows(const ItemState& s, int64_t r0, int64_t n, const float* factor,
                             float* const* rows) {
    for (int64_t r = 0; r < n; ++r) {
      const float* acc = s.acc + (r0 + r) * padded(s.p->value_dim);
      for (int64_t e = 0; e < s.p->value_dim; ++e) rows[r][e] = factor[r] * acc[e];
    }
  }

 private:
  // Rows whose sums P·V keeps in registers at a time, and vectors of the value dimension it keeps
  // per row: a quarter of the registers stays for the V vectors and the weight. (With 16
  // registers, leaving 8 kept 2 vectors per row for 4 rows; 3 took 0.95x the time on
  // 1,32,8,1,1024,128 and 0.89x on 1,16,8,1,4096,128, Zen 3; with the keys in chunks too, 2
  // still took 1.03-1.21x the time of 3 on those and gqa-decode.) With 16 registers, 8 rows go as
  // two groups of 4 (3 vectors each), not all 8 with 1: 7 loads per 12 FMAs instead of 9 per 8;
  // 6 rows go as two groups of 3 (4 vectors each).
  static constexpr int kGroupRows =
      kVectorRegisters == 16 ? (kRows % 4 == 0 ? std::min(kRows, 4) : std::min(kRows, 3)) : kRows;
  static constexpr int kValueVecs = std::clamp((kVectorRegisters * 3 / 4) / kGroupRows, 1, 8);

  // The K or V rows of the tile after the one at c0, to prefetch: only for several rows, whose
  // products per key hide the prefetches. One row streams as fast without them (beyond the
  // last-level cache, 1,4,4,1,262144,128 took 1.08x the time with them).
  static RowsAhead rows_ahead(const ItemState& s, const core::Operand& t, int64_t width,
                              int64_t c0) {
    if constexpr (kRows == 1) return RowsAhead();
    return RowsAhead(s, t, width, c0 + kKeysPerTile);
  }

  static void softcap(float* row, int64_t n, float cap) {
    const DF df;
    const VF c = hn::Set(df, cap), inv = hn::Set(df, 1.0f / cap);
    for (int64_t i = 0; i < n; i += lanes())
      hn::Store(hn::Mul(c, hn::Tanh(df, hn::Mul(hn::Load(df, row + i), inv))), df, row + i);
  }

  static void mask(ItemState& s, int64_t r, int64_t c0, int64_t nk, float* row) {
    const DF df;
    const float* add = mask_row(s, r, c0, nk);
    std::fill(s.row_buf + nk, s.row_buf + padded(nk), 0.0f);
    for (int64_t c = 0; c < nk; c += lanes())
      hn::Store(apply_mask(df, hn::Load(df, row + c), hn::LoadU(df, add + c)), df, row + c);
  }

  // acc[r][e] = alpha[r]·acc[r][e] + Σ_c p[r][c]·V[c][e]     (einsum "rc,ce->re")
  // kSkipZero: a zero probability contributes nothing even when its V row holds Inf or NaN
  // (masked keys must not be read into the arithmetic). Groups of kGroupRows rows, those past the
  // item's last row skipped. Each group and block of value vectors passes over the keys, so where
  // there are several such passes the keys go in chunks whose V rows stay in L1 for all of them
  // (keys_per_value_chunk). The next tile's V rows of as many keys are prefetched in order, spread
  // evenly over the passes. (All in the first pass issued a whole row per key at a rate memory
  // cannot serve; the prefetches then held the misses' buffers and the core waited, and the later
  // passes computed while memory idled. Spread: 0.70-0.85x the time of gqa-decode and
  // 1,64,8,1,8192,128, beyond the last-level cache, Zen 3.)
  template <bool kSkipZero, typename T>
  static void pv(ItemState& s, const T* v, int64_t ldv, int64_t nk, const RowsAhead& ahead) {
    const DF df;
    constexpr int64_t N = hn::MaxLanes(DF());
    const int64_t ld = padded(s.p->value_dim);
    const int64_t blocks = (ld / N + kValueVecs - 1) / kValueVecs;
    const int64_t passes = (s.rows + kGroupRows - 1) / kGroupRows * blocks;
    const int64_t chunk = passes == 1 ? nk : keys_per_value_chunk(ld * sizeof(T));
    for (int64_t c0 = 0; c0 < nk; c0 += chunk) {
      const int64_t c1 = std::min(nk, c0 + chunk), n = c1 - c0;
      for (int64_t g = 0; g < s.rows; g += kGroupRows) {
        const float* scores = s.scores + g * kKeysPerTile;
        float* sums = s.acc + g * ld;
        for_each_block<kValueVecs>(ld / N, [&](auto vecs, int64_t j0) {
          constexpr int kC = decltype(vecs)::value;
          // Pass p over the chunk prefetches its rows ahead i with p·n <= i·passes < (p+1)·n,
          // the one for i at key c0 + i·passes - p·n: one row every `passes` keys.
          const int64_t p = g / kGroupRows * blocks + j0 / kValueVecs;
          int64_t next = (p * n + passes - 1) / passes, at = c0 + next * passes - p * n;
          const int64_t row_ld = ld;  // locals for the stores (see for_each_block)
          float* const out = sums + j0 * N;
          VF acc[kGroupRows][kC];
          for (int r = 0; r < kGroupRows; ++r) {  // the rescale by alpha, with the first chunk
            const VF a = hn::Set(df, s.alpha[g + r]);
            for (int j = 0; j < kC; ++j) {
              const VF sum = hn::Load(df, out + r * row_ld + j * N);
              acc[r][j] = c0 == 0 ? hn::Mul(a, sum) : sum;
            }
          }
          for (int64_t c = c0; c < c1; ++c) {
            if constexpr (kRows > 1) {
              if (c == at) {
                ahead.prefetch(c0 + next++);
                at += passes;
              }
            }
            VF vc[kC];
            for (int j = 0; j < kC; ++j) vc[j] = load_f32(df, v + c * ldv + (j0 + j) * N);
            for (int r = 0; r < kGroupRows; ++r) {
              const float pr = scores[r * kKeysPerTile + c];
              if (kSkipZero && pr == 0.0f) continue;
              const VF weight = hn::Set(df, pr);
              for (int j = 0; j < kC; ++j) acc[r][j] = hn::MulAdd(weight, vc[j], acc[r][j]);
            }
          }
          for (int r = 0; r < kGroupRows; ++r)
            for (int j = 0; j < kC; ++j) hn::Store(acc[r][j], df, out + r * row_ld + j * N);
        });
      }
    }
  }
};

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // XATTN_KERNELS_DIM_LANES_INL_H_
