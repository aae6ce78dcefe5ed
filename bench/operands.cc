#include "bench/operands.h"

#include <cstring>

#include "xattn/half.h"

namespace xattn::bench {
namespace {

constexpr uint64_t kSeed = 0x78617474'6e62656eull;

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Irwin-Hall: the sum of four uniform [0, 1) variables has mean 2 and variance 1/3, so
// (sum - 2)·sqrt(3) has mean 0 and variance 1, like a standard normal, but is bounded by
// 2·sqrt(3): error bounds relative to max|V| hold for every shape. The four uniforms are the 16-bit
// quarters of one hash of (tensor, index), so any element can be made independently and in any
// order.
float normalish(uint64_t tensor, uint64_t i) {
  const uint64_t r = splitmix64(kSeed ^ (tensor << 56) ^ i);
  float sum = 0;
  for (int part = 0; part < 4; ++part) {
    sum += (static_cast<float>((r >> (16 * part)) & 0xffff) + 0.5f) * (1.0f / 65536.0f);
  }
  return (sum - 2.0f) * 1.7320508f;
}

size_t elements(int64_t a, int64_t b, int64_t c, int64_t d) {
  return static_cast<size_t>(a) * static_cast<size_t>(b) * static_cast<size_t>(c) * static_cast<size_t>(d);
}

// n elements of `dtype` in 16-bit units.
size_t units(size_t n, DType dtype) { return n * static_cast<size_t>(dtype_size(dtype)) / 2; }

AlignedBuffer<uint16_t> random_tensor(uint64_t tensor, size_t n, DType dtype) {
  AlignedBuffer<uint16_t> buf(units(n, dtype));
  if (dtype == DType::kBF16) {
    for (size_t i = 0; i < n; ++i) buf[i] = float_to_bf16(normalish(tensor, i));
  } else {
    auto* f = reinterpret_cast<float*>(buf.data());
    for (size_t i = 0; i < n; ++i) f[i] = normalish(tensor, i);
  }
  return buf;
}

TensorView contiguous(const AlignedBuffer<uint16_t>& buf, DType dtype, int64_t b, int64_t h, int64_t l,
                      int64_t d) {
  return {buf.data(), dtype, Layout::contiguous({b, h, l, d})};
}

}  // namespace

Operands::Operands(const Shape& s, DType dtype)
    : shape_(s),
      dtype_(dtype),
      q_(random_tensor(1, elements(s.B, s.Hq, s.Lq, s.D), dtype)),
      k_(random_tensor(2, elements(s.B, s.Hkv, s.Lk, s.D), dtype)),
      v_(random_tensor(3, elements(s.B, s.Hkv, s.Lk, s.Dv()), dtype)),
      out_(units(elements(s.B, s.Hq, s.Lq, s.Dv()), dtype)) {}

TensorView Operands::q() const { return contiguous(q_, dtype_, shape_.B, shape_.Hq, shape_.Lq, shape_.D); }
TensorView Operands::k() const { return contiguous(k_, dtype_, shape_.B, shape_.Hkv, shape_.Lk, shape_.D); }
TensorView Operands::v() const {
  return contiguous(v_, dtype_, shape_.B, shape_.Hkv, shape_.Lk, shape_.Dv());
}

MutableTensorView Operands::out() {
  return {out_.data(), dtype_, Layout::contiguous({shape_.B, shape_.Hq, shape_.Lq, shape_.Dv()})};
}

BackwardOperands::BackwardOperands(const Operands& fwd)
    : shape_(fwd.shape()),
      dtype_(fwd.dtype()),
      lse_(units(elements(shape_.B, shape_.Hq, shape_.Lq, 1), DType::kF32)),
      dout_(random_tensor(4, elements(shape_.B, shape_.Hq, shape_.Lq, shape_.Dv()), dtype_)),
      dq_(units(elements(shape_.B, shape_.Hq, shape_.Lq, shape_.D), dtype_)),
      dk_(units(elements(shape_.B, shape_.Hkv, shape_.Lk, shape_.D), dtype_)),
      dv_(units(elements(shape_.B, shape_.Hkv, shape_.Lk, shape_.Dv()), dtype_)) {}

MutableTensorView BackwardOperands::lse() {
  return {lse_.data(), DType::kF32, Layout::contiguous({shape_.B, shape_.Hq, shape_.Lq})};
}

TensorView BackwardOperands::dout() const {
  return contiguous(dout_, dtype_, shape_.B, shape_.Hq, shape_.Lq, shape_.Dv());
}

AttentionGradients BackwardOperands::grads() {
  const Shape& s = shape_;
  return {{dq_.data(), dtype_, Layout::contiguous({s.B, s.Hq, s.Lq, s.D})},
          {dk_.data(), dtype_, Layout::contiguous({s.B, s.Hkv, s.Lk, s.D})},
          {dv_.data(), dtype_, Layout::contiguous({s.B, s.Hkv, s.Lk, s.Dv()})}};
}

float Operands::out_at(int64_t i) const {
  if (dtype_ == DType::kBF16) return bf16_to_float(out_[static_cast<size_t>(i)]);
  float f;
  std::memcpy(&f, out_.data() + 2 * i, sizeof f);
  return f;
}

}  // namespace xattn::bench
