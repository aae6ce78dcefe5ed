#include "info_command.h"

#include <CLI/CLI.hpp>

#include "process_tuning.h"
#include "xattn/runtime.h"

namespace xattn::cli {

CLI::App* add_info_command(CLI::App& app) {
  return app.add_subcommand("info", "Print the version, the SIMD target in use, the thread count and "
                                    "OpenBLAS's kernels");
}

void info_command(std::ostream& os) {
  os << "xattn " << version() << "\n"
     << "simd target: " << simd_target() << "\n"
     << "available targets:";
  for (const std::string& t : available_simd_targets()) os << " " << t;
  os << "\n"
     << "cpu: " << cpu_name() << "\n"
     << "bf16 dot products: " << (bf16_dot_products() ? "yes" : "no") << " (" << bf16_dot_reason()
     << ")\n"
     << "tiles: " << kernel_tiles() << "\n"
     << "threads: " << default_num_threads() << "\n"
     << "OpenBLAS kernels: " << blas_kernels() << "\n";
  if (blas_missed_avx512())
    os << "  note: this CPU has AVX-512, which this OpenBLAS does not recognise; run with "
          "OPENBLAS_CORETYPE=SkylakeX for its AVX-512 kernels\n";
}

}  // namespace xattn::cli
