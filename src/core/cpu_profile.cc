#include "core/cpu_profile.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace xattn::core {
namespace {

// The size of the cache at `level` that cpu0 uses, as Linux's sysfs reports it ("32768K"), or 0.
int64_t sysfs_cache_bytes(int level) {
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    std::ifstream level_file(dir + "/level"), size_file(dir + "/size");
    int got_level = 0;
    int64_t size = 0;
    std::string unit;
    if (!(level_file >> got_level)) return 0;
    if (got_level != level || !(size_file >> size)) continue;
    size_file >> unit;
    return size * (unit == "K" ? 1024 : unit == "M" ? 1024 * 1024 : 1);
  }
  return 0;
}

// The cache at `level` (2 or 3) that one core uses: sysfs first, as glibc's sysconf reports the
// L3 of all of an AMD EPYC's CCDs (256 MiB on a Zen 3 whose cores share 32 MiB); 0 if unknown.
int64_t cache_bytes(int level) {
  if (const int64_t bytes = sysfs_cache_bytes(level); bytes > 0) return bytes;
#if defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  if (const long bytes = sysconf(level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
      bytes > 0)
    return bytes;
#endif
  return 0;
}

CpuProfile detect() {
  CpuProfile p;
  p.name = "unknown CPU";
  p.why_bf16 = "unknown CPU: used wherever the CPU has them";
  if (const int64_t l2 = cache_bytes(2); l2 > 0) p.l2_bytes = l2;
  if (const int64_t l3 = cache_bytes(3); l3 > 0) p.llc_bytes = l3;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return p;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4), std::memcpy(vendor + 4, &d, 4), std::memcpy(vendor + 8, &c, 4);
  __get_cpuid(1, &a, &b, &c, &d);
  const int base_family = (a >> 8) & 0xf, base_model = (a >> 4) & 0xf;
  p.family = base_family == 0xf ? base_family + ((a >> 20) & 0xff) : base_family;
  p.model = base_family == 0x6 || base_family == 0xf ? base_model | ((a >> 12) & 0xf0) : base_model;
  char fallback[64];
  std::snprintf(fallback, sizeof fallback, "%s family %d model %d", vendor, p.family, p.model);
  p.name = fallback;
  if (std::strcmp(vendor, "AuthenticAMD") == 0) {
    // Family 19h is Zen 3 (no AVX-512) but for Zen 4's model ranges.
    const auto models = [&](int lo, int hi) { return p.model >= lo && p.model <= hi; };
    if (p.family == 0x19) p.name = "AMD Zen 3";
    if (p.family == 0x19 && (models(0x10, 0x1f) || models(0x60, 0x7f) || models(0xa0, 0xaf)))
      p.name = "AMD Zen 4", p.fma512_pipes = 1;
    if (p.family == 0x1a) p.name = "AMD Zen 5", p.fma512_pipes = 2;
    p.bf16_dot_pays = true;
    p.why_bf16 = "AMD: at the FMA rate, twice the products";
  } else if (std::strcmp(vendor, "GenuineIntel") == 0) {
    if (p.family == 6 && (p.model == 0x8f || p.model == 0xcf))
      p.name = "Intel Sapphire/Emerald Rapids", p.fma512_pipes = 2;
    if (p.family == 6 && (p.model == 0xad || p.model == 0xae))
      p.name = "Intel Granite Rapids", p.fma512_pipes = 2;
    if (p.family == 6 && p.model == 0x55) p.name = "Intel Cascade/Cooper Lake", p.fma512_pipes = 2;
    p.bf16_dot_pays = false;
    p.why_bf16 = "Intel: one port, half the rate of the two f32 FMA ports; bf16 is widened";
  }
#endif
  return p;
}

std::atomic<int> forced_bf16{static_cast<int>(Forced::kAuto)};
std::atomic<int> forced_chunks{static_cast<int>(Forced::kAuto)};
std::atomic<int> forced_prefetch{static_cast<int>(Forced::kAuto)};

}  // namespace

const CpuProfile& cpu_profile() {
  static const CpuProfile profile = detect();
  return profile;
}

void force_bf16_dot(Forced mode) { forced_bf16.store(static_cast<int>(mode)); }

Forced forced_bf16_dot() { return static_cast<Forced>(forced_bf16.load(std::memory_order_relaxed)); }

bool bf16_dot_wanted() {
  const Forced mode = forced_bf16_dot();
  return mode == Forced::kAuto ? cpu_profile().bf16_dot_pays : mode == Forced::kOn;
}

void force_key_chunks(Forced mode) { forced_chunks.store(static_cast<int>(mode)); }

Forced forced_key_chunks() {
  return static_cast<Forced>(forced_chunks.load(std::memory_order_relaxed));
}

void force_kv_prefetch(Forced mode) { forced_prefetch.store(static_cast<int>(mode)); }

Forced forced_kv_prefetch() {
  return static_cast<Forced>(forced_prefetch.load(std::memory_order_relaxed));
}

}  // namespace xattn::core
