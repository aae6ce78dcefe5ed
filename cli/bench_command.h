#pragma once
// `xattn bench`: times xattn::attention on a public suite of shapes (or given ones) in f32 and
// bf16, and measures in the same run the machine's limits and an unfused OpenBLAS baseline, so
// that every figure it prints is a ratio of times taken under the same conditions.

#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace xattn::cli {

// The options as typed; nullopt means "not given". bench_command parses and checks all of them
// before it runs anything.
struct BenchOptions {
  std::vector<std::string> shapes;
  bool causal = false;
  std::optional<std::string> dtype, threads, runs, min_time, json, bf16_dot, key_chunks,
      kv_prefetch;
  bool no_baseline = false;
  bool backward = false;
  bool profile = false;
};

CLI::App* add_bench_command(CLI::App& app, BenchOptions& options);

// Prints the machine figures and a table row per case to `os`, then writes --json if given.
// Throws xattn::Error naming the option for any bad value, before measuring anything.
void bench_command(const BenchOptions& options, std::ostream& os);

}  // namespace xattn::cli
