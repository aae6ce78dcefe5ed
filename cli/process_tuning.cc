#include "process_tuning.h"

#include <unistd.h>

#include <cstdlib>

#include "xattn/runtime.h"

namespace xattn::cli {

bool blas_missed_avx512() {
  return blas_kernels() == "Prescott" && __builtin_cpu_supports("avx512f");
}

void restart_tuned_for_layers(char** argv) {
  bool changed = false;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    changed |= setenv("OMP_WAIT_POLICY", "passive", 0) == 0;
  }
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr && blas_missed_avx512()) {
    changed |= setenv("OPENBLAS_CORETYPE", "SkylakeX", 0) == 0;
  }
  if (changed) execv("/proc/self/exe", argv);  // returns only if it failed: run as we are
}

}  // namespace xattn::cli
