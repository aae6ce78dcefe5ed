#pragma once
// What the CPU is, read once from its identity (CPUID vendor, family, model), and the kernel
// choices that depend on it. One place, so that `xattn info` can print every choice and a new
// micro-architecture is one row of the table in cpu_profile.cc. Identity, not timing: the same
// CPU always gets the same kernels, and so the same bits.

#include <cstdint>
#include <string>

namespace xattn::core {

struct CpuProfile {
  std::string name;           // e.g. "AMD Zen 4", "Intel Sapphire/Emerald Rapids"
  int family = 0, model = 0;  // CPUID's display family and model
  // 512-bit FMA pipes per core, as the vendor documents them (0: none or unknown).
  // Informational: the register blocking fills the vector registers either way.
  int fma512_pipes = 0;
  // Whether AVX-512 BF16 dot products (vdpbf16ps) outrun two f32 FMAs per bf16 pair: on Zen 4
  // and Zen 5 they run at the FMA rate with twice the products; on Intel's Xeons only one
  // port runs them, half the rate of the two FMA ports (measured there: 172 vs 349 GFLOP/s on
  // two cores), so widening bf16 to f32 is the faster way.
  bool bf16_dot_pays = true;
  std::string why_bf16;  // the reason, for `xattn info`
  // A core's L2 cache, as sysfs (else sysconf) reports it; 1 MiB when neither says. Where one
  // head's K and V outgrow it, the forward runs a head's work items together over chunks of
  // keys that fit in it.
  int64_t l2_bytes = int64_t{1} << 20;
  // The last-level cache a core uses, as sysfs (else sysconf) reports it; 32 MiB, a Zen CCD's
  // L3, when neither says. Where a decoder step's K and V outgrow it, they come from memory,
  // and the forward prefetches them a key tile ahead.
  int64_t llc_bytes = int64_t{32} << 20;
};

const CpuProfile& cpu_profile();

// A kernel choice the profile makes, unless forced (tests cover every path on any CPU;
// benchmarks compare them).
enum class Forced { kAuto, kOn, kOff };

// bf16 inputs: AVX-512 BF16 dot products, where the CPU and the SIMD target have them.
void force_bf16_dot(Forced mode);
Forced forced_bf16_dot();
bool bf16_dot_wanted();

// The forward's key chunks (a head's work items run together over chunks of keys): the
// profile's rule is "when one head's K and V exceed l2_bytes".
void force_key_chunks(Forced mode);
Forced forced_key_chunks();

// The decode layout's prefetch of K and V a key tile ahead: the profile's rule is "when the
// problem's K and V exceed llc_bytes".
void force_kv_prefetch(Forced mode);
Forced forced_kv_prefetch();

}  // namespace xattn::core
