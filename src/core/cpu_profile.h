#pragma once
// What the CPU is, read once from its identity (CPUID vendor, family, model), and the kernel
// choices that depend on it. One place, so that `xattn info` can print every choice and a new
// micro-architecture is one row of the table in cpu_profile.cc. Identity, not timing: the same
// CPU always gets the same kernels, and so the same bits.

#include <string>

namespace xattn::core {

struct CpuProfile {
  std::string name;           // e.g. "AMD Zen 4", "Intel Sapphire/Emerald Rapids"
  int family = 0, model = 0;  // CPUID's display family and model
  // 512-bit FMA pipes per core, as the vendor documents them (0: unknown). Informational: the
  // register blocking fills the 32 vector registers either way.
  int fma512_pipes = 0;
  // Whether AVX-512 BF16 dot products (vdpbf16ps) outrun two f32 FMAs per bf16 pair: on Zen 4
  // and Zen 5 they run at the FMA rate with twice the products; on Intel's Xeons only one
  // port runs them, half the rate of the two FMA ports (measured there: 172 vs 349 GFLOP/s on
  // two cores), so widening bf16 to f32 is the faster way.
  bool bf16_dot_pays = true;
  std::string why_bf16;  // the reason, for `xattn info`
};

const CpuProfile& cpu_profile();

// The kernels' decision for bf16 inputs, where the CPU and the SIMD target have BF16 dot
// products: the profile's, unless forced (tests cover both paths on any CPU; benchmarks
// compare them).
enum class Bf16Dot { kAuto, kOn, kOff };
void force_bf16_dot(Bf16Dot mode);
Bf16Dot forced_bf16_dot();
bool bf16_dot_wanted();

}  // namespace xattn::core
