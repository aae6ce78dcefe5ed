// Tile products for bf16 inputs with AVX-512 BF16 dot products (vdpbf16ps): each instruction
// takes 32 bf16 pairs and adds both products of every pair to an f32 lane, twice the f32 FMA
// rate. Q·Kᵀ: products of two bf16 values are exact in f32 and the sums are f32, so the scores
// are as accurate as the f32 path's (inputs below 2^-126 are read as 0, which changes no score
// by more than 2^-126·|q|). P·V, only when the caller allows it: the probabilities are rounded
// to bf16 first, which adds up to 2^-9 relative error to each weight.
//
// Highway 1.0.3 has no op for this instruction, so the kernel is written with intrinsics for
// the AVX3 targets and enabled only when the CPU reports avx512bf16 (kHaveBf16Dot is false on
// every other target) and its profile says they outrun f32 FMAs (core/cpu_profile.h).
//
// Layouts (a pair is one uint32, low half = the even element):
//   Qp  [D/2][Br]   query pairs along d, unscaled
//   K   [nk][D]     key rows, bf16, read in place: K[c][2i..2i+1] is a pair
//   Pp  [nk/2][Br]  probability pairs along the keys
//   Vp  [nk/2][Dv]  value pairs along the keys, packed per tile

#if defined(XATTN_KERNELS_BF16_DOT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef XATTN_KERNELS_BF16_DOT_INL_H_
#undef XATTN_KERNELS_BF16_DOT_INL_H_
#else
#define XATTN_KERNELS_BF16_DOT_INL_H_
#endif

#include <cstdint>
#include <cstring>

#include "core/cpu_profile.h"
#include "hwy/highway.h"
#include "kernels/tile_kernels-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
inline constexpr bool kHaveBf16Dot = true;

inline bool cpu_has_bf16_dot() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
}

// On top of the target's own options (lambdas inside inherit a pragma, not an attribute).
// clang applies only the outermost pushed target attribute, so there the target's own push is
// replaced by one that adds avx512bf16 (and restored at the end).
#if HWY_COMPILER_CLANG
HWY_POP_ATTRIBUTES
HWY_PUSH_ATTRIBUTES(HWY_TARGET_STR ",avx512bf16")
#else
#pragma GCC push_options
#pragma GCC target("avx512bf16")
#endif

// The broadcast operand: the bf16 pair for (column j, pair i) is the uint32 at
// data + j·col_stride + i·pair_stride, strides counted in bf16 elements.
struct PairColumns {
  const uint16_t* data;
  int64_t col_stride, pair_stride;
};

// Out[j][r] = (alpha[r]·Out[j][r] if kAccumulate) + scale · Σ_i A[i][r] · B(j, i)
// for j < ncols and i < pairs; A holds one uint32 pair per (i, row), Br rows per i.
//   Q·Kᵀ: A = query pairs, B(j, i) = K[c0+j][2i..2i+1], Out = St     (scale = softmax scale)
//   P·V:  A = probability pairs, B(e, i) = V[2i..2i+1][e], Out = AccT (scale = 1)
template <int kRowVecs, bool kAccumulate>
void pair_dot_tile(const uint32_t* HWY_RESTRICT a, int64_t br, PairColumns b, int64_t ncols,
                   int64_t pairs, const float* HWY_RESTRICT alpha, float scale,
                   float* HWY_RESTRICT out) {
  const __m512 vscale = _mm512_set1_ps(scale);
  for_each_block<columns_per_block<kRowVecs>()>(ncols, [&](auto cols, int64_t j0) {
    constexpr int kCols = decltype(cols)::value;
    const int64_t ld = br;  // locals for the stores (see for_each_block)
    float* const sums = out + j0 * ld;
    __m512 acc[kCols][kRowVecs];
    for (int v = 0; v < kRowVecs; ++v) {
      const __m512 keep = kAccumulate ? _mm512_load_ps(alpha + v * 16) : _mm512_setzero_ps();
      for (int j = 0; j < kCols; ++j)
        acc[j][v] =
            kAccumulate ? _mm512_mul_ps(keep, _mm512_load_ps(sums + j * ld + v * 16)) : keep;
    }
    const uint16_t* col = b.data + j0 * b.col_stride;
    for (int64_t i = 0; i < pairs; ++i) {
      __m512bh av[kRowVecs];
      for (int v = 0; v < kRowVecs; ++v)
        av[v] = reinterpret_cast<__m512bh>(_mm512_load_si512(a + i * br + v * 16));
      for (int j = 0; j < kCols; ++j) {
        uint32_t pair;
        std::memcpy(&pair, col + j * b.col_stride + i * b.pair_stride, sizeof(pair));
        const __m512bh bb = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(pair)));
        for (int v = 0; v < kRowVecs; ++v) acc[j][v] = _mm512_dpbf16_ps(acc[j][v], av[v], bb);
      }
    }
    for (int j = 0; j < kCols; ++j)
      for (int v = 0; v < kRowVecs; ++v) {
        const __m512 result = kAccumulate ? acc[j][v] : _mm512_mul_ps(acc[j][v], vscale);
        _mm512_store_ps(sums + j * ld + v * 16, result);
      }
  });
}

// Pt [nk][Br] f32 -> Pp[i][r] = the bf16 pair (P[2i][r], P[2i+1][r]), rounded to nearest even;
// an odd last key pairs with 0.
inline void pack_probability_pairs(const float* HWY_RESTRICT pt, int64_t br, int64_t nk,
                                   uint32_t* HWY_RESTRICT pp) {
  // Word 2r of the result takes word r (even key) and word 2r+1 takes word 16+r (odd key).
  alignas(64) static constexpr uint16_t kInterleave[32] = {
      0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(kInterleave);
  for (int64_t c = 0; c < nk; c += 2)
    for (int64_t r = 0; r < br; r += 16) {
      const __m512 even = _mm512_load_ps(pt + c * br + r);
      const __m512 odd = c + 1 < nk ? _mm512_load_ps(pt + (c + 1) * br + r) : _mm512_setzero_ps();
      const __m512i words = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(odd, even));
      _mm512_store_si512(pp + (c / 2) * br + r, _mm512_permutexvar_epi16(idx, words));
    }
}

// V rows c0 .. c0+nk (bf16, row stride ldv, unit element stride) -> Vp[i][e] = the pair
// (V[2i][e], V[2i+1][e]), rows of `ld` pairs; an odd last row pairs with 0.
inline void pack_value_pairs(const uint16_t* HWY_RESTRICT v, int64_t ldv, int64_t nk,
                             int64_t value_dim, uint32_t* HWY_RESTRICT vp, int64_t ld) {
  // Words 2e, 2e+1 of the first result take word e of each row; the second result, word 16+e.
  alignas(64) static constexpr uint16_t kLow[32] = {
      0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
      8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static constexpr uint16_t kHigh[32] = {
      16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
      24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i lo = _mm512_load_si512(kLow), hi = _mm512_load_si512(kHigh);
  for (int64_t c = 0; c < nk; c += 2) {
    const uint16_t* even = v + c * ldv;
    const uint16_t* odd = even + ldv;
    uint32_t* dst = vp + (c / 2) * ld;
    for (int64_t e = 0; e < value_dim; e += 32) {
      // Masked loads read nothing past the row (or past the tile for an odd last row).
      const int64_t n = value_dim - e < 32 ? value_dim - e : 32;
      const __mmask32 m = static_cast<__mmask32>((uint64_t{1} << n) - 1);
      const __m512i a = _mm512_maskz_loadu_epi16(m, even + e);
      const __m512i b =
          c + 1 < nk ? _mm512_maskz_loadu_epi16(m, odd + e) : _mm512_setzero_si512();
      const auto first = [](int64_t k) { return static_cast<__mmask16>((uint32_t{1} << k) - 1); };
      const __m512i p0 = _mm512_permutex2var_epi16(a, lo, b);
      _mm512_mask_storeu_epi32(dst + e, first(n < 16 ? n : 16), p0);
      if (n > 16) {
        const __m512i p1 = _mm512_permutex2var_epi16(a, hi, b);
        _mm512_mask_storeu_epi32(dst + e + 16, first(n - 16), p1);
      }
    }
  }
}

#if HWY_COMPILER_CLANG
HWY_POP_ATTRIBUTES
HWY_PUSH_ATTRIBUTES(HWY_TARGET_STR)
#else
#pragma GCC pop_options
#endif
#else
inline constexpr bool kHaveBf16Dot = false;
inline bool cpu_has_bf16_dot() { return false; }
struct PairColumns {
  const uint16_t* data;
  int64_t col_stride, pair_stride;
};
template <int kRowVecs, bool kAccumulate>
void pair_dot_tile(const uint32_t*, int64_t, PairColumns, int64_t, int64_t, const float*, float,
                   float*) {}
inline void pack_probability_pairs(const float*, int64_t, int64_t, uint32_t*) {}
inline void pack_value_pairs(const uint16_t*, int64_t, int64_t, int64_t, uint32_t*, int64_t) {}
#endif

// Whether a call uses them: the CPU has them and its profile (or a test) wants them.
inline bool use_bf16_dot() { return cpu_has_bf16_dot() && core::bf16_dot_wanted(); }

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // XATTN_KERNELS_BF16_DOT_INL_H_
