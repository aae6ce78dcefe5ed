// Square transposes between row-major rows (one pointer per row) and the lanes-major tiles of the
// row-lanes layout: packing Q into Qᵀ [D][Br], and unpacking Accᵀ [Dv][Br] into output rows.
// Element by element they cost one load and one store each, which made packing and unpacking a
// third of the time for items with few keys (sd-unet-xattn: 77 keys, D = 40). On AVX-512 a
// block of 16 rows × 16 columns is transposed in registers instead: 64 shuffles for 256
// elements; on AVX2 one of 8 × 8, 24 shuffles for 64 (sd-unet-xattn: 0.90x the time on a Zen 3,
// with plain loads and stores for whole vectors: masked ones made it 1.06x).
// Other targets keep the element loop.

#if defined(XATTN_KERNELS_TRANSPOSE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef XATTN_KERNELS_TRANSPOSE_INL_H_
#undef XATTN_KERNELS_TRANSPOSE_INL_H_
#else
#define XATTN_KERNELS_TRANSPOSE_INL_H_
#endif

#include <cstdint>

#include "hwy/highway.h"
#include "kernels/tile_kernels-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
#define XATTN_REGISTER_TRANSPOSE 1

// v[r] holds row r of a 16 × 16 block; afterwards v[c] holds column c.
HWY_INLINE void transpose_square(VF* v) {
  __m512 t[16], u[16];
  // Within each 128-bit block: pairs of rows interleaved, then quads (t, u: u[4g + c] holds,
  // in block b, column 4b + c of rows 4g .. 4g + 3).
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(v[i].raw, v[i + 1].raw);
    t[i + 1] = _mm512_unpackhi_ps(v[i].raw, v[i + 1].raw);
  }
  for (int g = 0; g < 16; g += 4) {
    const __m512d a = _mm512_castps_pd(t[g]), b = _mm512_castps_pd(t[g + 2]);
    const __m512d c = _mm512_castps_pd(t[g + 1]), d = _mm512_castps_pd(t[g + 3]);
    u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  // Then the 128-bit blocks: column 4b + c gathers block b of u[c], u[4 + c], u[8 + c], u[12 + c].
  for (int c = 0; c < 4; ++c) {
    const __m512 even_lo = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);   // blocks 0, 2
    const __m512 even_hi = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 odd_lo = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xdd);    // blocks 1, 3
    const __m512 odd_hi = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xdd);
    v[c].raw = _mm512_shuffle_f32x4(even_lo, even_hi, 0x88);
    v[8 + c].raw = _mm512_shuffle_f32x4(even_lo, even_hi, 0xdd);
    v[4 + c].raw = _mm512_shuffle_f32x4(odd_lo, odd_hi, 0x88);
    v[12 + c].raw = _mm512_shuffle_f32x4(odd_lo, odd_hi, 0xdd);
  }
}
#elif HWY_ARCH_X86 && HWY_TARGET == HWY_AVX2
#define XATTN_REGISTER_TRANSPOSE 1

// v[r] holds row r of an 8 × 8 block; afterwards v[c] holds column c.
HWY_INLINE void transpose_square(VF* v) {
  __m256 t[8], u[8];
  // Within each 128-bit half: pairs of rows interleaved, then quads, so that u[4g + c] holds
  // column c (low half) and column 4 + c (high half) of rows 4g .. 4g + 3.
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(v[i].raw, v[i + 1].raw);
    t[i + 1] = _mm256_unpackhi_ps(v[i].raw, v[i + 1].raw);
  }
  for (int g = 0; g < 8; g += 4) {
    u[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
    u[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xee);
    u[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
    u[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xee);
  }
  // Then the halves: column c from the low halves of u[c] and u[4 + c], column 4 + c from the
  // high halves.
  for (int c = 0; c < 4; ++c) {
    v[c].raw = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    v[4 + c].raw = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

#else
#define XATTN_REGISTER_TRANSPOSE 0
#endif

// dst[c·ldd + r] = scale · rows[r][c0 + c] for c < nc, rows r < n (those from n up to a
// vector's worth get 0).
inline void pack_transposed(const float* const* rows, int64_t n, int64_t c0, int64_t nc,
                            float scale, float* dst, int64_t ldd) {
#if XATTN_REGISTER_TRANSPOSE
  {
    const DF df;
    const auto valid = hn::FirstN(df, static_cast<size_t>(nc));
    constexpr int64_t N = hn::MaxLanes(DF());
    VF v[N];
    for (int64_t r = 0; r < N; ++r)
      v[r] = r >= n   ? hn::Zero(df)
             : nc == N ? hn::Mul(hn::Set(df, scale), hn::LoadU(df, rows[r] + c0))
                       : hn::Mul(hn::Set(df, scale), hn::MaskedLoad(valid, df, rows[r] + c0));
    transpose_square(v);
    for (int64_t c = 0; c < nc; ++c) hn::StoreU(v[c], df, dst + c * ldd);
  }
#else
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(DF()));
  for (int64_t c = 0; c < nc; ++c)
    for (int64_t r = 0; r < lanes; ++r) dst[c * ldd + r] = r < n ? scale * rows[r][c0 + c] : 0.0f;
#endif
}

// rows[r][c0 + c] = factor[r] · src[c·lds + r] for c < nc, r < n: the other elements of the
// rows are not touched.
inline void unpack_transposed(const float* src, int64_t lds, const float* factor, int64_t n,
                              float* const* rows, int64_t c0, int64_t nc) {
#if XATTN_REGISTER_TRANSPOSE
  {
    const DF df;
    const VF f = hn::LoadU(df, factor);
    constexpr int64_t N = hn::MaxLanes(DF());
    VF v[N];
    for (int64_t c = 0; c < N; ++c)
      v[c] = c < nc ? hn::Mul(hn::LoadU(df, src + c * lds), f) : hn::Zero(df);
    transpose_square(v);
    const auto valid = hn::FirstN(df, static_cast<size_t>(nc));
    // Whole vectors stored plainly: masked stores are slow on AMD (vmaskmovps).
    for (int64_t r = 0; r < n; ++r)
      nc == N ? hn::StoreU(v[r], df, rows[r] + c0)
              : hn::BlendedStore(v[r], valid, df, rows[r] + c0);
  }
#else
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < nc; ++c) rows[r][c0 + c] = factor[r] * src[c * lds + r];
#endif
}

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#undef XATTN_REGISTER_TRANSPOSE

#endif  // XATTN_KERNELS_TRANSPOSE_INL_H_
