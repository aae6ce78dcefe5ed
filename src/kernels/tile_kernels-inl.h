// The two register-blocked micro-kernels of the tiled forward, f32, vectorised over query rows.
//
// Layouts (Br = query rows of the tile, a multiple of the vector width; "T" = transposed):
//   Qt  [D][Br]   scaled queries, packed once per work item
//   K   [nk][D]   key rows, read in place (row stride ldk) or from a converted copy
//   St  [nk][Br]  scores, later probabilities, of this key tile
//   V   [nk][Dv]  value rows, read in place (row stride ldv) or from a converted copy
//   AccT[Dv][Br]  running Σ p·v
// Keeping rows in the vector lanes makes every softmax step a vertical operation (no
// horizontal reductions) and lets K and V be read in their natural row layout, one broadcast
// element at a time, so f32 inputs need no packing at all.

#if defined(XATTN_KERNELS_TILE_KERNELS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef XATTN_KERNELS_TILE_KERNELS_INL_H_
#undef XATTN_KERNELS_TILE_KERNELS_INL_H_
#else
#define XATTN_KERNELS_TILE_KERNELS_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Accumulators one block may hold, leaving room for the row vectors and a broadcast.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
inline constexpr int kVectorRegisters = 32;
#else
inline constexpr int kVectorRegisters = 16;
#endif

// The most lanes a vector of floats has on any target, for arrays indexed by lane.
inline constexpr int64_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);

// Row vectors per tile (query rows in the lanes): the most whose register blocks keep at least
// twelve accumulators (4x6 of 32 registers, 2x6 of 16), enough to hide the FMA latency on two
// pipes with loads to spare. With 16 registers, 4 row vectors leave 4x2 blocks, whose 6 loads
// per 8 FMAs held the products near 70% of the peak (Zen 3, AVX2); 2x6 blocks took 0.82x the
// time on self-2k-d64 and 0.93x on sd-unet-xattn.
inline constexpr int kTileRowVecs = kVectorRegisters == 32 ? 4 : 2;

template <int kRowVecs>
constexpr int columns_per_block() {
  const int c = (kVectorRegisters - kRowVecs - 2) / kRowVecs;
  return c > 8 ? 8 : (c < 1 ? 1 : c);
}

// Calls body(integral_constant<int, C>, start) for full blocks of kMax columns, then once for
// the remainder with C = n % kMax, so every block is a fully unrolled instantiation.
// Bodies copy what their stores use (output pointer, strides) into locals first: the compiler
// takes a vector store as possibly writing any memory, so it reloads a captured reference after
// each one, several instructions per store. (Q·Kᵀ timed alone, `xattn bench --profile`, went
// from 85 to 95 GFLOP/s at D = 40 and from 90 to 97 at D = 64, of a 100-103 peak, Zen 3.)
template <int kMax, class Body>
HWY_INLINE void for_each_block(int64_t n, const Body& body) {
  int64_t c = 0;
  for (; c + kMax <= n; c += kMax) body(std::integral_constant<int, kMax>(), c);
  const int64_t rest = n - c;
  if (rest == 0) return;
  [&]<int... I>(std::integer_sequence<int, I...>) {
    ((rest == I + 1 ? (body(std::integral_constant<int, I + 1>(), c), 0) : 0), ...);
  }(std::make_integer_sequence<int, kMax - 1>());
}

// Which terms a micro-kernel skips: none, or those whose broadcast A value, or whose B lane, is
// zero. Masked keys have zero weights, and their values must not reach the arithmetic when they
// hold Inf or NaN (0·NaN is NaN); the skip costs two instructions per product, so callers use
// it only for tiles with such values.
enum class Skip { kNone, kZeroA, kZeroB };
// How A is laid out: A(j, i) = a[j·lda + i] (kByColumn: each output column's values are
// adjacent) or a[i·lda + j] (kByDepth). A compile-time choice, so that the broadcasts address
// with constant offsets.
enum class ALayout { kByColumn, kByDepth };

// The general register-blocked micro-kernel of the f32 tiles (the backward's dV, dK and dQ):
//   Out[j][0 .. kVecs·N) += Σ_{i < depth} A(j, i) · B[i][0 .. kVecs·N)     j < ncols
// A(j, i) (see ALayout; row stride lda) is broadcast; B's rows are ldb apart and Out's ldo
// apart, both whole vectors at any alignment (B may be K read in place). Each block of columns
// keeps its kCols × kVecs sums in registers for the whole depth, so each B vector loaded serves
// kCols columns.
template <int kVecs, ALayout kA, Skip kSkip = Skip::kNone>
HWY_INLINE void broadcast_tile(const float* HWY_RESTRICT a, int64_t lda,
                               const float* HWY_RESTRICT b, int64_t ldb, int64_t ncols,
                               int64_t depth, float* HWY_RESTRICT out, int64_t ldo) {
  const DF df;
  const size_t N = hn::Lanes(df);
  for_each_block<columns_per_block<kVecs>()>(ncols, [&](auto cols, int64_t j0) {
    constexpr int kCols = decltype(cols)::value;
    const int64_t ld = ldo, lanes = static_cast<int64_t>(N);
    float* const sums = out + j0 * ld;
    VF acc[kCols][kVecs];
    for (int j = 0; j < kCols; ++j)
      for (int v = 0; v < kVecs; ++v) acc[j][v] = hn::LoadU(df, sums + j * ld + v * lanes);
    for (int64_t i = 0; i < depth; ++i) {
      VF x[kVecs];
      for (int v = 0; v < kVecs; ++v) x[v] = hn::LoadU(df, b + i * ldb + v * N);
      // The A values of this depth step: a row of lda-strided columns, or adjacent ones.
      const float* ai = kA == ALayout::kByColumn ? a + j0 * lda + i : a + i * lda + j0;
      for (int j = 0; j < kCols; ++j) {
        const VF w = hn::Set(df, kA == ALayout::kByColumn ? ai[j * lda] : ai[j]);
        for (int v = 0; v < kVecs; ++v) {
          const VF sum = hn::MulAdd(w, x[v], acc[j][v]);
          if constexpr (kSkip == Skip::kNone) acc[j][v] = sum;
          if constexpr (kSkip == Skip::kZeroA)
            acc[j][v] = hn::IfThenElse(hn::Ne(w, hn::Zero(df)), sum, acc[j][v]);
          if constexpr (kSkip == Skip::kZeroB)
            acc[j][v] = hn::IfThenElse(hn::Ne(x[v], hn::Zero(df)), sum, acc[j][v]);
        }
      }
    }
    for (int j = 0; j < kCols; ++j)
      for (int v = 0; v < kVecs; ++v) hn::StoreU(acc[j][v], df, sums + j * ld + v * lanes);
  });
}

// The forward's two products keep their own, narrower loops: the same products through
// broadcast_tile measured 4% slower end to end (self-2k-d64 and perceiver-encode, three
// interleaved runs on an Intel Xeon), the cost of its general addressing.

// St[c][r] = Σ_d K[c][d] · Qt[d][r]        (einsum "cd,dr->cr")
template <int kRowVecs>
HWY_INLINE void qk_tile(const float* HWY_RESTRICT qt, int64_t br, const float* HWY_RESTRICT k,
                        int64_t ldk, int64_t nk, int64_t head_dim, float* HWY_RESTRICT st) {
  const DF df;
  const size_t N = hn::Lanes(df);
  for_each_block<columns_per_block<kRowVecs>()>(nk, [&](auto cols, int64_t c0) {
    constexpr int kCols = decltype(cols)::value;
    const int64_t ld = br, lanes = static_cast<int64_t>(N);
    float* const out = st + c0 * ld;
    VF acc[kCols][kRowVecs];
    for (int j = 0; j < kCols; ++j)
      for (int v = 0; v < kRowVecs; ++v) acc[j][v] = hn::Zero(df);
    const float* krow = k + c0 * ldk;
    for (int64_t d = 0; d < head_dim; ++d) {
      VF q[kRowVecs];
      for (int v = 0; v < kRowVecs; ++v) q[v] = hn::Load(df, qt + d * br + v * N);
      for (int j = 0; j < kCols; ++j) {
        const VF kb = hn::Set(df, krow[j * ldk + d]);
        for (int v = 0; v < kRowVecs; ++v) acc[j][v] = hn::MulAdd(kb, q[v], acc[j][v]);
      }
    }
    for (int j = 0; j < kCols; ++j)
      for (int v = 0; v < kRowVecs; ++v) hn::Store(acc[j][v], df, out + j * ld + v * lanes);
  });
}

// Keys per chunk of a P·V product (pv_tile, and the decode layout's): each block of value
// columns passes over all of a tile's keys, reading a few floats of every V row, so the keys go
// in chunks whose V rows (of row_bytes each) fit in half of L1, where the next block's pass finds
// them (a tile of 128 rows of 64 floats alone fills a 32 KiB L1). The sums still run over the
// keys in order, so the bits do not depend on the chunks.
inline int64_t keys_per_value_chunk(int64_t row_bytes) {
  constexpr int64_t kChunkBytes = 16 * 1024;
  return std::max<int64_t>(kChunkBytes / std::max<int64_t>(row_bytes, 1), 8);
}

// AccT[e][r] = alpha[r]·AccT[e][r] + Σ_c V[c][e] · Pt[c][r]     (einsum "ce,cr->er"), over keys
// in chunks (keys_per_value_chunk).
// kSkipZero: a zero probability contributes nothing even when its V row holds Inf or NaN;
// boundary tiles need it because masked keys have p = 0 and their values must not be read
// into the arithmetic (0·NaN is NaN).
template <int kRowVecs, bool kSkipZero>
HWY_INLINE void pv_tile(float* HWY_RESTRICT acct, int64_t br, const float* HWY_RESTRICT alpha,
                        const float* HWY_RESTRICT pt, const float* HWY_RESTRICT v, int64_t ldv,
                        int64_t nk, int64_t value_dim) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const int64_t chunk = keys_per_value_chunk(value_dim * sizeof(float));
  for (int64_t c0 = 0; c0 < nk; c0 += chunk) {
    const int64_t c1 = std::min(nk, c0 + chunk);
    for_each_block<columns_per_block<kRowVecs>()>(value_dim, [&](auto cols, int64_t e0) {
      constexpr int kCols = decltype(cols)::value;
      const int64_t ld = br, lanes = static_cast<int64_t>(N);
      float* const out = acct + e0 * ld;
      VF acc[kCols][kRowVecs];
      for (int r = 0; r < kRowVecs; ++r)  // the rescale by alpha, once: with the first chunk
        for (int j = 0; j < kCols; ++j) {
          const VF sums = hn::Load(df, out + j * ld + r * lanes);
          acc[j][r] = c0 == 0 ? hn::Mul(hn::Load(df, alpha + r * lanes), sums) : sums;
        }
      for (int64_t c = c0; c < c1; ++c) {
        VF p[kRowVecs];
        for (int r = 0; r < kRowVecs; ++r) p[r] = hn::Load(df, pt + c * ld + r * lanes);
        const float* vrow = v + c * ldv + e0;
        for (int j = 0; j < kCols; ++j) {
          const VF vb = hn::Set(df, vrow[j]);
          for (int r = 0; r < kRowVecs; ++r) {
            if constexpr (kSkipZero) {
              acc[j][r] = hn::IfThenElse(hn::Ne(p[r], hn::Zero(df)),
                                         hn::MulAdd(p[r], vb, acc[j][r]), acc[j][r]);
            } else {
              acc[j][r] = hn::MulAdd(p[r], vb, acc[j][r]);
            }
          }
        }
      }
      for (int j = 0; j < kCols; ++j)
        for (int r = 0; r < kRowVecs; ++r) hn::Store(acc[j][r], df, out + j * ld + r * lanes);
    });
  }
}

// Whether rows [0, n) of width `width` (row stride ld) hold only finite values.
HWY_INLINE bool all_finite(const float* HWY_RESTRICT rows, int64_t ld, int64_t n, int64_t width) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  auto finite = hn::IsFinite(hn::Zero(df));
  for (int64_t c = 0; c < n; ++c) {
    const float* row = rows + c * ld;
    int64_t e = 0;
    for (; e + N <= width; e += N) finite = hn::And(finite, hn::IsFinite(hn::LoadU(df, row + e)));
    for (; e < width; ++e)
      if (!std::isfinite(row[e])) return false;
  }
  return hn::AllTrue(df, finite);
}

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // XATTN_KERNELS_TILE_KERNELS_INL_H_
