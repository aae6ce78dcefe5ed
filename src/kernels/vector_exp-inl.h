// exp(x) for f32 vectors, <= 2 ulp wherever the result is a normal float; results below
// FLT_MIN flush to 0 (they weigh nothing next to a row's maximum, whose weight is 1).
// NaN propagates (softmax must not turn a NaN score into a zero weight).
//
// exp(x) = 2^n · e^r with n = round(x / ln 2) and r = x - n·ln 2 in [-ln2/2, ln2/2]; ln 2 is
// split in two (Cody-Waite) so n·ln2_hi is exact, and e^r = 1 + r + r²·q(r) with q of degree 4
// fitted for the least maximum relative error on that interval (3.1e-9, far below half an ulp;
// one multiply-add fewer than the degree-7 Taylor polynomial of the same accuracy).

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

// kNonPositive: the caller promises x <= 0 or NaN (softmax's s - max), so the overflow test is
// left out.
template <bool kNonPositive = false, class D, class V = hn::Vec<D>>
HWY_INLINE V VectorExp(D d, V x) {
  const V kLog2e = hn::Set(d, 1.44269504088896341f);
  const V kLn2Hi = hn::Set(d, 0.693359375f);  // 9 significant bits: n·kLn2Hi is exact
  const V kLn2Lo = hn::Set(d, -2.12194440e-4f);
  const V kMaxX = hn::Set(d, 88.7228391f);    // above: +inf
  const V kMinX = hn::Set(d, -87.3365448f);   // below: result under FLT_MIN, flushed to 0

  const V n = hn::Round(hn::Mul(x, kLog2e));
  V r = hn::NegMulAdd(n, kLn2Hi, x);
  r = hn::NegMulAdd(n, kLn2Lo, r);
  // Horner: q(r), then (q·r + 1)·r + 1.
  V p = hn::Set(d, 0.001381461275741458f);
  p = hn::MulAdd(p, r, hn::Set(d, 0.008368710055947304f));
  p = hn::MulAdd(p, r, hn::Set(d, 0.04166838899254799f));
  p = hn::MulAdd(p, r, hn::Set(d, 0.1666652113199234f));
  p = hn::MulAdd(p, r, hn::Set(d, 0.4999999403953552f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  // vscalefps: p·2^n in one instruction, exact, for every n the range checks below let through.
  V y{_mm512_scalef_ps(p.raw, n.raw)};
#else
  // 2^n from the exponent bits; n is in [-126, 128] whenever x is in range. At n = 128
  // (x just under kMaxX) split the power as 2^(n-1)·2 so the exponent field does not overflow.
  const hn::RebindToSigned<D> di;
  const auto ni = hn::ConvertTo(di, n);
  const auto half_n = hn::ShiftRight<1>(ni);
  const V scale_a = hn::BitCast(d, hn::ShiftLeft<23>(hn::Add(half_n, hn::Set(di, 127))));
  const V scale_b = hn::BitCast(d, hn::ShiftLeft<23>(hn::Add(hn::Sub(ni, half_n), hn::Set(di, 127))));
  V y = hn::Mul(hn::Mul(p, scale_a), scale_b);
#endif
  if constexpr (!kNonPositive) y = hn::IfThenElse(hn::Gt(x, kMaxX), hn::Set(d, __builtin_inff()), y);
  return hn::IfThenZeroElse(hn::Lt(x, kMinX), y);
}

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // XATTN_KERNELS_VECTOR_EXP_INL_H_
