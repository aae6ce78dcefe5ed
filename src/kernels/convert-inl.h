// Reads a row of any input dtype into f32, SIMD when it is contiguous.

#if defined(XATTN_KERNELS_CONVERT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef XATTN_KERNELS_CONVERT_INL_H_
#undef XATTN_KERNELS_CONVERT_INL_H_
#else
#define XATTN_KERNELS_CONVERT_INL_H_
#endif

#include <cstdint>
#include <cstring>

#include "core/convert.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// T is hwy::float16_t or hwy::bfloat16_t; the tail goes through the scalar conversion.
template <typename T>
HWY_INLINE void widen_contiguous(const T* HWY_RESTRICT src, DType t, int64_t n,
                                 float* HWY_RESTRICT dst) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<T, decltype(df)> dh;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, src + i)), df, dst + i);
  for (; i < n; ++i) dst[i] = core::load_element(src, t, i);
}

// dst[i] = float(src[i·stride]) for i < n.
HWY_INLINE void convert_row(const void* src, DType t, int64_t stride, int64_t n, float* dst) {
  if (stride == 1) {
    switch (t) {
      case DType::kF32: std::memcpy(dst, src, n * sizeof(float)); return;
      case DType::kF16: widen_contiguous(static_cast<const hwy::float16_t*>(src), t, n, dst); return;
      case DType::kBF16: widen_contiguous(static_cast<const hwy::bfloat16_t*>(src), t, n, dst); return;
      case DType::kBool: break;
    }
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = core::load_element(src, t, i * stride);
}

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // XATTN_KERNELS_CONVERT_INL_H_
