// exp(x) for f32 vectors, <= 2 ulp wherever the result is a normal float; results below
// FLT_MIN flush to 0 (they weigh nothing next to a row's maximum, whose weight is 1).
// NaN propagates (softmax must not turn a NaN score into a zero weight).
//
// exp(x) = 2^n · e^r with n = round(x / ln 2) and r = x - n·ln 2 in [-ln2/2, ln2/2]; ln 2 is
// split in two (Cody-Waite) so n·ln2_hi is exact, and e^r = 1 + r + r²·q(r) with q of degree 4
// fitted for the least maximum relative error on that interval (3.1e-9, far below half an ulp;
// one multiply-add fewer than the degree-7 Taylor polynomial of the same accuracy).
//
// 12 micro-ops with AVX-512 for the softmax (kNonPositive), where rounding with vrndscaleps
// (two micro-ops on Intel) and flushing with a separate blend took 14: n comes from adding
// 1.5·2^23 in the same multiply-add as x·log2 e, whose rounding then leaves round(x·log2 e) in
// the low bits (exact for |x·log2 e| < 2^22), and subtracting it again; the flush is the
// zero-mask of vscalefps. (A softmax exp of one reduction step, f = x·log2 e - n, saved one more
// but added |x|·2^-24 to its relative error, from log2 e's rounding: enough to double the worst
// gradient error of the models' float64 checks, to 1.1e-5.)

#if defined(XATTN_KERNELS_VECTOR_EXP_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef XATTN_KERNELS_VECTOR_EXP_INL_H_
#undef XATTN_KERNELS_VECTOR_EXP_INL_H_
#else
#define XATTN_KERNELS_VECTOR_EXP_INL_H_
#endif

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

namespace exp_detail {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kMinX = -87.3365448f;  // below: result under FLT_MIN, flushed to 0
constexpr float kShift = 12582912.0f;   // 1.5·2^23

// x·log2 e + 1.5·2^23: its rounding leaves n = round(x·log2 e) in the low bits of the mantissa
// (exact for |x·log2 e| < 2^22); subtracting 1.5·2^23 again gives n as a float.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V ShiftedLog2(D d, V x) {
  return hn::MulAdd(x, hn::Set(d, kLog2e), hn::Set(d, kShift));
}

// p·2^n, and 0 where x < kMinX (NaN x keeps the NaN p carries), from n = round(x·log2 e) and
// shifted = ShiftedLog2(x). n is in [-126, 128] wherever x is in range; kNonPositive: x <= 0,
// so n <= 0.
template <bool kNonPositive, class D, class V = hn::Vec<D>>
HWY_INLINE V ScaleOrFlush(D d, V p, V n, V shifted, V x) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  // vscalefps: p·2^n in one instruction, exact, zeroed under the mask in the same instruction.
  static_assert(sizeof(hn::VFromD<D>) == 64, "the AVX-512 form takes whole 16-float vectors");
  (void)d, (void)shifted;
  const __mmask16 keep = _mm512_cmp_ps_mask(x.raw, _mm512_set1_ps(kMinX), _CMP_NLT_UQ);
  return V{_mm512_maskz_scalef_ps(keep, p.raw, n.raw)};
#else
  (void)n;  // taken from shifted's bits instead
  const hn::RebindToSigned<D> di;
  const auto flush = hn::Lt(x, hn::Set(d, kMinX));
  if constexpr (kNonPositive) {
    // n in [-126, 0] wherever the result is kept: 2^n is one float, whose exponent field
    // n + 127 comes from shifted's low bits (its other bits shift out) in two integer
    // instructions, where splitting the power takes eight.
    const auto exponent =
        hn::Add(hn::ShiftLeft<23>(hn::BitCast(di, shifted)), hn::Set(di, 127 << 23));
    return hn::IfThenZeroElse(flush, hn::Mul(p, hn::BitCast(d, exponent)));
  }
  // 2^n from the exponent bits. At n = 128 (x just under the overflow bound) split the power as
  // 2^(n-1)·2 so the exponent field does not overflow. n as an integer from shifted's bits
  // (1.5·2^23 + n): converting the float n would be undefined for NaN and ±inf on the scalar
  // targets (UBSan), and is no cheaper.
  const auto ni = hn::Sub(hn::BitCast(di, shifted), hn::BitCast(di, hn::Set(d, kShift)));
  const auto half_n = hn::ShiftRight<1>(ni);
  const V scale_a = hn::BitCast(d, hn::ShiftLeft<23>(hn::Add(half_n, hn::Set(di, 127))));
  const V scale_b =
      hn::BitCast(d, hn::ShiftLeft<23>(hn::Add(hn::Sub(ni, half_n), hn::Set(di, 127))));
  return hn::IfThenZeroElse(flush, hn::Mul(hn::Mul(p, scale_a), scale_b));
#endif
}

}  // namespace exp_detail

// kNonPositive: the caller promises x <= 0 or NaN (softmax's s - max), so the overflow test is
// left out.
template <bool kNonPositive = false, class D, class V = hn::Vec<D>>
HWY_INLINE V VectorExp(D d, V x) {
  const V shifted = exp_detail::ShiftedLog2(d, x);
  const V n = hn::Sub(shifted, hn::Set(d, exp_detail::kShift));
  V r = hn::NegMulAdd(n, hn::Set(d, 0.693359375f), x);  // 9 significant bits: n·ln2_hi is exact
  r = hn::NegMulAdd(n, hn::Set(d, -2.12194440e-4f), r);
  // Horner: q(r), then (q·r + 1)·r + 1.
  V p = hn::Set(d, 0.001381461275741458f);
  p = hn::MulAdd(p, r, hn::Set(d, 0.008368710055947304f));
  p = hn::MulAdd(p, r, hn::Set(d, 0.04166838899254799f));
  p = hn::MulAdd(p, r, hn::Set(d, 0.1666652113199234f));
  p = hn::MulAdd(p, r, hn::Set(d, 0.4999999403953552f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
  const V y = exp_detail::ScaleOrFlush<kNonPositive>(d, p, n, shifted, x);
  if constexpr (kNonPositive) return y;
  return hn::IfThenElse(hn::Gt(x, hn::Set(d, 88.7228391f)), hn::Set(d, __builtin_inff()), y);
}

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // XATTN_KERNELS_VECTOR_EXP_INL_H_
