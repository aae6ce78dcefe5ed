#pragma once
// Runs the benchmark: times xattn::attention and the unfused baseline on each (shape, dtype,
// thread count) and relates every time to the machine's limits measured in the same run.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bench/machine_limits.h"
#include "bench/suite.h"
#include "xattn/tensor.h"

namespace xattn::bench {

// Per-call wall time of a repeated call, in seconds.
struct Timing {
  double median = 0, min = 0, max = 0;
  int calls = 0;  // timed calls (the warm-up call is not counted)
};

// One warm-up call, then calls until at least `min_runs` calls and `min_seconds` have passed.
Timing time_calls(const std::function<void()>& call, int min_runs, double min_seconds);

// The inputs' dtype and how xattn may compute with them: "f32"; "bf16" (f32 arithmetic
// throughout, the default); "bf16p" (bf16 inputs with AttentionParams::bf16_probabilities).
struct Variant {
  DType dtype = DType::kF32;
  bool bf16_probabilities = false;
  std::string label() const;
  bool operator==(const Variant&) const = default;
};

struct BenchPlan {
  std::vector<Shape> shapes;
  std::vector<Variant> variants;  // f32 first when present: the others are compared with it
  std::vector<int> threads;   // the first is the reference for thread speed-ups
  int min_runs = 5;
  double min_seconds = 0.3;
  bool time_baseline = true;  // false: the baseline still runs once, untimed, for max_err
  bool backward = false;      // also time attention_backward
  bool profile = false;       // also measure where the time goes (StageShares)
};

// --profile: each stage's share of the threads' time in the kernel (core/profile.h), from
// calls run with the stage counters on, after the timed ones; `other` is the rest (thread
// start and wait, partitioning, what no stage covers).
struct StageShares {
  std::vector<std::pair<std::string, double>> stages;
  double other = 0;
};

struct CaseResult {
  Shape shape;
  Variant variant;
  int threads = 1;

  Timing xattn;
  double gflops = 0;                     // flops(shape) / median
  std::optional<double> peak_fraction;   // of the f32 FMA peak (f32) or bf16 dot peak (bf16)
  std::optional<double> over_f32;        // bf16 rows: f32 median / this median, same threads
  std::optional<double> thread_speedup;  // later thread counts: first count's median / this

  // --backward: attention_backward's time, GFLOP/s counting 10·B·Hq·Lq·Lk·D (halved for
  // causal), their fraction of the peak, and backward time / forward time.
  std::optional<Timing> backward;
  std::optional<double> backward_gflops, backward_peak_fraction, backward_over_forward;

  std::optional<StageShares> forward_profile, backward_profile;

  std::optional<Timing> baseline;
  std::optional<double> speedup;  // baseline median / xattn median

  // Bandwidth-bound shapes (Lq = 1) only: K+V bytes / median, and that over the machine's
  // copy and read bandwidths; and whether K and V exceed the last-level cache the kernels
  // assume (then every call reads them from memory, and %read is the figure to judge).
  std::optional<double> kv_gbps, kv_copy_fraction, kv_read_fraction;
  std::optional<bool> kv_beyond_llc;

  double max_err = 0;      // max |xattn - baseline| over the output (NaN if either has NaN)
  double ref_max_abs = 0;  // max |baseline|: the scale max_err is to be read against
  double v_max_abs = 0;    // max |V|: bf16 probabilities may add 2^-9 of it
};

// Runs every case of `plan` in the order shape, dtype, thread count; `limits` holds one entry per
// plan.threads entry. Calls on_result after each case (for progress output) and returns all.
std::vector<CaseResult> run_plan(const BenchPlan& plan, const std::vector<MachineLimits>& limits,
                                 const std::function<void(const CaseResult&)>& on_result);

}  // namespace xattn::bench
