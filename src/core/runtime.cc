#include "xattn/runtime.h"

#include <cblas.h>
#include <omp.h>

#include <string>

#include "hwy/targets.h"
#include "core/cpu_profile.h"
#include "core/validate.h"
#include "kernels/backward.h"
#include "kernels/forward.h"
#include "xattn/error.h"

namespace xattn {

std::string version() { return XATTN_VERSION; }

std::string simd_target() { return kernels::dispatched_target_name(); }

std::string blas_kernels() { return openblas_get_corename(); }

std::string kernel_tiles() {
  return std::string(kernels::dispatched_forward_tiles()) + "; " +
         kernels::dispatched_backward_tiles();
}

std::string cpu_name() { return core::cpu_profile().name; }

bool bf16_dot_products() {
  return kernels::dispatched_bf16_dot_available() && core::bf16_dot_wanted();
}

std::string bf16_dot_reason() {
  if (!kernels::dispatched_bf16_dot_available())
    return "the CPU or the SIMD target in use has no AVX-512 BF16";
  if (core::forced_bf16_dot() != core::Forced::kAuto) return "forced";
  return core::cpu_profile().why_bf16;
}

namespace {

core::Forced parse_forced(const char* function, const std::string& mode) {
  if (mode == "auto") return core::Forced::kAuto;
  if (mode == "on") return core::Forced::kOn;
  if (mode == "off") return core::Forced::kOff;
  throw Error(std::string(function) + ": mode must be 'auto', 'on' or 'off', got '" + mode + "'");
}

}  // namespace

void force_bf16_dot_products(const std::string& mode) {
  core::force_bf16_dot(parse_forced("force_bf16_dot_products", mode));
}

void force_key_chunks(const std::string& mode) {
  core::force_key_chunks(parse_forced("force_key_chunks", mode));
}

void force_kv_prefetch(const std::string& mode) {
  core::force_kv_prefetch(parse_forced("force_kv_prefetch", mode));
}

std::vector<std::string> available_simd_targets() {
  std::vector<std::string> names;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) names.emplace_back(hwy::TargetName(t));
  return names;
}

void force_simd_target(const std::string& name) {
  if (name.empty()) {
    hwy::SetSupportedTargetsForTest(0);
    return;
  }
  hwy::SetSupportedTargetsForTest(0);  // choose among all real targets, not a previous choice
  for (int64_t t : hwy::SupportedAndGeneratedTargets())
    if (name == hwy::TargetName(t)) {
      hwy::SetSupportedTargetsForTest(t);
      return;
    }
  std::string known;
  for (const std::string& n : available_simd_targets()) known += (known.empty() ? "" : ", ") + n;
  throw Error("force_simd_target: unknown or unavailable target '" + name + "' (available: " +
              known + ")");
}

int default_num_threads() { return omp_get_max_threads(); }

void set_default_num_threads(int n) {
  if (n < 1 || n > core::kMaxThreads)
    throw Error("num_threads: must be in [1, " + std::to_string(core::kMaxThreads) + "], got " +
                std::to_string(n));
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

}  // namespace xattn
