#pragma once
// `xattn run`: attention over .npy inputs, or the built-in example when no inputs are given.

#include "run_params.h"

namespace CLI {
class App;
}

namespace xattn::cli {

CLI::App* add_run_command(CLI::App& app, RunOptions& options);

// Throws xattn::Error for any bad input, before any output file is touched.
void run_command(const RunOptions& options);

}  // namespace xattn::cli
