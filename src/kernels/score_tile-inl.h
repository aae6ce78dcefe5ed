// What happens to a tile of scores St [nk][Br] between Q·Kᵀ and P·V: the score transform
// (softcap), the masks (boundary tiles only), and the online-softmax update that turns scores
// into probabilities. All vertical: each lane is one query row.

#if defined(XATTN_KERNELS_SCORE_TILE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef XATTN_KERNELS_SCORE_TILE_INL_H_
#undef XATTN_KERNELS_SCORE_TILE_INL_H_
#else
#define XATTN_KERNELS_SCORE_TILE_INL_H_
#endif

#include <cstdint>

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kernels/vector_exp-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// s -> cap·tanh(s / cap)
template <int kRowVecs>
HWY_INLINE void softcap_tile(float* HWY_RESTRICT st, int64_t br, int64_t nk, float cap) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  const auto c = hn::Set(df, cap), inv = hn::Set(df, 1.0f / cap);
  for (int64_t k = 0; k < nk; ++k)
    for (int r = 0; r < kRowVecs; ++r) {
      float* p = st + k * br + r * N;
      hn::Store(hn::Mul(c, hn::Tanh(df, hn::Mul(hn::Load(df, p), inv))), df, p);
    }
}

// Keys outside each row's visible interval become -inf. lo/hi are per row, relative to the
// tile's first key and clamped to [-1, nk + 1], so they are exact as floats.
template <int kRowVecs>
HWY_INLINE void range_mask_tile(float* HWY_RESTRICT st, int64_t br, int64_t nk,
                                const float* HWY_RESTRICT lo, const float* HWY_RESTRICT hi) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  const auto neg_inf = hn::Set(df, -__builtin_inff());
  for (int r = 0; r < kRowVecs; ++r) {
    const auto vlo = hn::Load(df, lo + r * N), vhi = hn::Load(df, hi + r * N);
    for (int64_t k = 0; k < nk; ++k) {
      const auto key = hn::Set(df, static_cast<float>(k));
      const auto visible = hn::And(hn::Ge(key, vlo), hn::Lt(key, vhi));
      float* p = st + k * br + r * N;
      hn::Store(hn::IfThenElse(visible, hn::Load(df, p), neg_inf), df, p);
    }
  }
}

// One online-softmax step for every row (lane) of the tile:
//   m' = max(m, max_k s_k);  alpha = e^(m - m');  p_k = e^(s_k - m');  l' = alpha·l + Σ_k p_k
// St is overwritten with p. A row that has seen only -inf keeps m = -inf: its exponent base is
// taken as 0 so that e^(-inf - base) = 0 rather than e^(-inf + inf) = NaN.
template <int kRowVecs>
HWY_INLINE void online_softmax_tile(float* HWY_RESTRICT st, int64_t br, int64_t nk,
                                    float* HWY_RESTRICT m, float* HWY_RESTRICT l,
                                    float* HWY_RESTRICT alpha) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  const auto neg_inf = hn::Set(df, -__builtin_inff());
  // The tile's maxima, all row vectors in one pass and kUnroll keys a step: at least four
  // independent chains of max, whose latency a single chain per row vector would pay per key.
  constexpr int kUnroll = kRowVecs >= 4 ? 1 : 4 / kRowVecs;
  hn::Vec<decltype(df)> tile_max[kUnroll][kRowVecs];
  for (auto& chain : tile_max)
    for (auto& x : chain) x = neg_inf;
  int64_t k0 = 0;
  for (; k0 + kUnroll <= nk; k0 += kUnroll)
    for (int u = 0; u < kUnroll; ++u)
      for (int r = 0; r < kRowVecs; ++r)
        tile_max[u][r] = hn::Max(tile_max[u][r], hn::Load(df, st + (k0 + u) * br + r * N));
  for (; k0 < nk; ++k0)
    for (int r = 0; r < kRowVecs; ++r)
      tile_max[0][r] = hn::Max(tile_max[0][r], hn::Load(df, st + k0 * br + r * N));
  for (int u = 1; u < kUnroll; ++u)
    for (int r = 0; r < kRowVecs; ++r) tile_max[0][r] = hn::Max(tile_max[0][r], tile_max[u][r]);
  for (int r = 0; r < kRowVecs; ++r) {
    const auto m_old = hn::Load(df, m + r * N);
    const auto m_new = hn::Max(m_old, tile_max[0][r]);
    const auto base = hn::IfThenZeroElse(hn::Eq(m_new, neg_inf), m_new);
    auto sum = hn::Zero(df);
    for (int64_t k = 0; k < nk; ++k) {
      float* p = st + k * br + r * N;
      const auto e = VectorExp<true>(df, hn::Sub(hn::Load(df, p), base));
      hn::Store(e, df, p);
      sum = hn::Add(sum, e);
    }
    const auto a = VectorExp(df, hn::Sub(m_old, base));
    hn::Store(hn::MulAdd(a, hn::Load(df, l + r * N), sum), df, l + r * N);
    hn::Store(m_new, df, m + r * N);
    hn::Store(a, df, alpha + r * N);
  }
}

// Final probabilities for the weights output: p = e^(s - m)·(1/l) with each row's final state,
// and 0 where 1/l = 0 (a row that saw nothing, or padding).
template <int kRowVecs>
HWY_INLINE void normalized_probabilities_tile(float* HWY_RESTRICT st, int64_t br, int64_t nk,
                                              const float* HWY_RESTRICT m,
                                              const float* HWY_RESTRICT inv_l) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  for (int r = 0; r < kRowVecs; ++r) {
    const auto row_m = hn::Load(df, m + r * N), row_inv_l = hn::Load(df, inv_l + r * N);
    const auto empty = hn::Eq(row_inv_l, hn::Zero(df));
    for (int64_t k = 0; k < nk; ++k) {
      float* p = st + k * br + r * N;
      const auto e = VectorExp<true>(df, hn::Sub(hn::Load(df, p), row_m));
      hn::Store(hn::IfThenZeroElse(empty, hn::Mul(e, row_inv_l)), df, p);
    }
  }
}

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // XATTN_KERNELS_SCORE_TILE_INL_H_
