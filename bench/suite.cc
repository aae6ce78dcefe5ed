#include "bench/suite.h"

#include <array>

namespace xattn::bench {
namespace {

Shape named(const char* name, int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk, int64_t D,
            bool causal = false) {
  return {name, B, Hq, Hkv, Lq, Lk, D, causal};
}

const std::array<Shape, 10>& shapes() {
  // clang-format off
  static const std::array<Shape, 10> kSuite = {
      //     name                  B   Hq Hkv    Lq     Lk    D
      named("whisper-decode",      5,  8,  8,    1,  1500,  64),  // decoder step over audio
      named("whisper-prefill",     1,  8,  8,  224,  1500,  64),
      named("sd-unet-xattn",       2,  8,  8, 4096,    77,  40),  // image tokens -> text
      named("perceiver-encode",    1,  8,  8,  512, 16384,  64),  // latents -> long input
      named("self-2k-d64",         1, 16, 16, 2048,  2048,  64),
      named("self-2k-d64-causal",  1, 16, 16, 2048,  2048,  64, true),
      named("self-2k-d128",        1,  8,  8, 2048,  2048, 128),
      named("self-2k-d128-causal", 1,  8,  8, 2048,  2048, 128, true),
      named("gqa-decode",          1, 32,  8,    1,  8192, 128),  // grouped-query decode step
      named("crossvit-cls",       64,  6,  6,    1,   401,  32),  // CLS token -> patches
  };
  // clang-format on
  return kSuite;
}

}  // namespace

std::span<const Shape> suite() { return shapes(); }

const Shape* find_suite_shape(std::string_view name) {
  for (const Shape& s : shapes()) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::string suite_names() {
  std::string names;
  for (const Shape& s : shapes()) names += (names.empty() ? "" : ", ") + s.name;
  return names;
}

double flops(const Shape& s) {
  const double full = 4.0 * static_cast<double>(s.B) * static_cast<double>(s.Hq) * static_cast<double>(s.Lq) *
                      static_cast<double>(s.Lk) * static_cast<double>(s.D);
  return s.causal ? full / 2 : full;
}

double kv_bytes(const Shape& s, DType dtype) {
  return static_cast<double>(s.B) * static_cast<double>(s.Hkv) * static_cast<double>(s.Lk) *
         static_cast<double>(s.D + s.Dv()) * static_cast<double>(dtype_size(dtype));
}

}  // namespace xattn::bench
