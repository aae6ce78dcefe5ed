// Parses and checks the bench options into a plan, then hands it to the bench library and the
// results to bench_report. No timing or attention math lives here.

#include "bench_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <optional>

#include "bench/machine_limits.h"
#include "bench/runner.h"
#include "bench/suite.h"
#include "bench_report.h"
#include "output_files.h"
#include "text_values.h"
#include "xattn/error.h"
#include "xattn/runtime.h"

namespace xattn::cli {
namespace {

using bench::Shape;

// Far more than anyone waits for; keeps a typo from looking like a hang.
constexpr int64_t kMaxRuns = 1'000'000;
constexpr double kMaxMinTime = 3600;

// "B,Hq,Hkv,Lq,Lk,D" (positive integers), or nullopt when `text` does not have that form.
std::optional<Shape> parse_custom_shape(const std::string& text, bool causal) {
  std::vector<int64_t> v;
  try {
    v = parse_int_list("--shape", text);
  } catch (const Error&) {
    return std::nullopt;
  }
  if (v.size() != 6) return std::nullopt;
  for (int64_t x : v) {
    if (x <= 0) return std::nullopt;
  }
  std::string name = std::to_string(v[0]);
  for (size_t i = 1; i < 6; ++i) name += "," + std::to_string(v[i]);
  return Shape{causal ? name + "-causal" : name, v[0], v[1], v[2], v[3], v[4], v[5], causal};
}

// Refuses what the library would refuse or what cannot be allocated, before the long run starts.
void check_custom_shape(const Shape& s, const std::string& text) {
  if (s.Hq % s.Hkv != 0) {
    throw Error("--shape: Hq = " + std::to_string(s.Hq) +
                " is not a multiple of Hkv = " + std::to_string(s.Hkv) + " in '" + text + "'");
  }
  // Causal FLOPs are counted as half the full square, which is only right for a square mask.
  if (s.causal && s.Lq != s.Lk) {
    throw Error(
        "--causal: needs Lq = Lk (the mask is top-left and half of the Lq x Lk scores are "
        "counted), got Lq = " +
        std::to_string(s.Lq) + ", Lk = " + std::to_string(s.Lk) + " in '" + text + "'");
  }
  // The largest buffers: Q or the output, K or V, and the baseline's scores of one head.
  for (const auto& dims : {std::array{s.B, s.Hq, s.Lq, s.D}, std::array{s.B, s.Hkv, s.Lk, s.D},
                           std::array<int64_t, 4>{s.Lq, s.Lk, 1, 1}}) {
    int64_t bytes = 4;
    for (int64_t d : dims) {
      if (__builtin_mul_overflow(bytes, d, &bytes)) {
        throw Error("--shape: '" + text + "' is too large");
      }
    }
  }
}

std::vector<Shape> parse_shapes(const BenchOptions& o) {
  std::vector<Shape> shapes;
  bool any_custom = false;
  for (const std::string& text : o.shapes) {
    if (const Shape* named = bench::find_suite_shape(trim(text))) {
      shapes.push_back(*named);
    } else if (std::optional<Shape> custom = parse_custom_shape(text, o.causal)) {
      check_custom_shape(*custom, text);
      shapes.push_back(*custom);
      any_custom = true;
    } else if (text.find(',') != std::string::npos) {
      throw Error("--shape: expected NAME or B,Hq,Hkv,Lq,Lk,D with positive integers, got '" + text + "'");
    } else {
      throw Error("--shape: unknown shape '" + text +
                  "' (expected B,Hq,Hkv,Lq,Lk,D or one of: " + bench::suite_names() + ")");
    }
  }
  if (o.causal && !any_custom) {
    throw Error(
        "--causal: applies to custom B,Hq,Hkv,Lq,Lk,D shapes only (the suite has its own "
        "causal shapes, e.g. self-2k-d64-causal)");
  }
  if (shapes.empty()) shapes.assign(bench::suite().begin(), bench::suite().end());
  return shapes;
}

std::vector<bench::Variant> parse_variants(const std::optional<std::string>& text) {
  const bench::Variant f32{DType::kF32, false}, bf16{DType::kBF16, false}, bf16p{DType::kBF16, true};
  const std::string t = text ? trim(*text) : "all";
  if (t == "f32") return {f32};
  if (t == "bf16") return {bf16};
  if (t == "bf16p") return {bf16p};
  if (t == "all") return {f32, bf16, bf16p};
  throw Error("--dtype: expected f32, bf16, bf16p or all, got '" + *text + "'");
}

std::vector<int> parse_threads(const std::optional<std::string>& text) {
  if (!text) return {default_num_threads()};
  const std::string why = "--threads: expected thread counts from 1 to " + std::to_string(kMaxThreads) +
                          ", comma-separated, got '" + *text + "'";
  std::vector<int64_t> counts;
  try {
    counts = parse_int_list("--threads", *text);
  } catch (const Error&) {
    throw Error(why);
  }
  std::vector<int> threads;
  for (int64_t n : counts) {
    if (n < 1 || n > kMaxThreads) throw Error(why);
    threads.push_back(static_cast<int>(n));
  }
  return threads;
}

int parse_runs(const std::optional<std::string>& text) {
  int64_t n = 5;
  if (text && (!to_int(*text, n) || n < 1 || n > kMaxRuns)) {
    throw Error("--runs: expected an integer from 1 to " + std::to_string(kMaxRuns) + ", got '" + *text +
                "'");
  }
  return static_cast<int>(n);
}

double parse_min_time(const std::optional<std::string>& text) {
  if (!text) return 0.3;
  const double s = parse_finite<double>("--min-time", *text);
  if (s < 0 || s > kMaxMinTime) {
    throw Error("--min-time: expected seconds from 0 to " + std::to_string(static_cast<int>(kMaxMinTime)) +
                ", got '" + *text + "'");
  }
  return s;
}

// Stores an option's value and marks it given (an empty value is given, and refused later).
CLI::Option* add_text_option(CLI::App* app, const std::string& name, std::optional<std::string>& target,
                             const std::string& help, const std::string& type_name) {
  return app
      ->add_option_function<std::string>(
          name, [&target](const std::string& v) { target = v; }, help)
      ->type_name(type_name);
}

}  // namespace

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o) {
  CLI::App* bench = app.add_subcommand(
      "bench",
      "Time xattn::attention on a suite of shapes (or given ones) in f32 and bf16, with the "
      "machine's FMA peak, bf16 dot peak and memory bandwidth and an unfused OpenBLAS baseline "
      "measured in the same run.");
  bench
      ->add_option("--shape", o.shapes,
                   "a suite shape (" + bench::suite_names() +
                       ") or a custom one; repeatable (default: the "
                       "whole suite)")
      ->type_name("NAME|B,Hq,Hkv,Lq,Lk,D")
      ->allow_extra_args(false);
  bench->add_flag("--causal", o.causal, "make the custom shapes causal (top-left)");
  add_text_option(bench, "--dtype", o.dtype,
                  "input and output dtype; bf16p: bf16 with bf16 probabilities for P·V (default all: "
                  "the three)",
                  "f32|bf16|bf16p|all");
  add_text_option(bench, "--threads", o.threads,
                  "thread counts; each case runs at each, with the speed-up over the first (default: " +
                      std::to_string(default_num_threads()) + ")",
                  "N[,N...]");
  add_text_option(bench, "--runs", o.runs, "at least this many timed calls per case (default 5)", "R");
  add_text_option(bench, "--min-time", o.min_time, "and at least this many seconds per case (default 0.3)",
                  "SECONDS");
  add_text_option(bench, "--json", o.json, "also write every figure to FILE as JSON", "FILE");
  bench->add_flag("--backward", o.backward,
                  "also time attention_backward (GFLOP/s count 10·B·Hq·Lq·Lk·D; bwd/fwd: its time "
                  "over the forward's)");
  add_text_option(bench, "--bf16-dot", o.bf16_dot,
                  "AVX-512 BF16 dot products for bf16: the CPU's choice (see xattn info), or forced "
                  "on or off (default auto)",
                  "auto|on|off");
  add_text_option(bench, "--key-chunks", o.key_chunks,
                  "the forward's query tiles of a head run together over chunks of keys that fit "
                  "in L2: the CPU's rule (where a head's K and V exceed its L2 cache; see xattn "
                  "info), or forced on or off (default auto)",
                  "auto|on|off");
  add_text_option(bench, "--kv-prefetch", o.kv_prefetch,
                  "decoder steps stream K and V (up to 8 rows in the decode layout, groups of "
                  "rows prefetching a key tile ahead): the CPU's rule (where K and V exceed the "
                  "last-level cache; see xattn info), or forced on or off (default auto)",
                  "auto|on|off");
  bench->add_flag("--profile", o.profile,
                  "also measure each kernel stage's share of the time (packing, scores, softmax, "
                  "weighted sum, finish; for --backward its stages too), and time the forward's "
                  "tile kernels alone, once per head dimension");
  bench->add_flag("--no-baseline", o.no_baseline,
                  "do not time the unfused baseline (it still runs once, for the max err column)");
  return bench;
}

void bench_command(const BenchOptions& o, std::ostream& os) {
  bench::BenchPlan plan;
  plan.shapes = parse_shapes(o);
  plan.variants = parse_variants(o.dtype);
  plan.threads = parse_threads(o.threads);
  plan.min_runs = parse_runs(o.runs);
  plan.min_seconds = parse_min_time(o.min_time);
  plan.time_baseline = !o.no_baseline;
  plan.backward = o.backward;
  plan.profile = o.profile;
  if (o.json) {
    if (o.json->empty()) throw Error("--json: expected a file name, got ''");
    check_writable("--json", *o.json);
  }

  const auto forced = [](const char* option, const std::optional<std::string>& mode,
                          void (*force)(const std::string&)) {
    if (!mode) return;
    if (*mode != "auto" && *mode != "on" && *mode != "off")
      throw Error(std::string(option) + ": expected auto, on or off, got '" + *mode + "'");
    force(*mode);
  };
  forced("--bf16-dot", o.bf16_dot, force_bf16_dot_products);
  forced("--key-chunks", o.key_chunks, force_key_chunks);
  forced("--kv-prefetch", o.kv_prefetch, force_kv_prefetch);
  const std::vector<bench::MachineLimits> limits = bench::measure_machine_limits(plan.threads);
  print_machine(os, plan, limits);
  print_table_head(os, plan);
  const std::vector<bench::CaseResult> results =
      bench::run_plan(plan, limits, [&](const bench::CaseResult& r) { print_row(os, plan, r); });
  const std::vector<bench::MachineLimits> limits_after = bench::measure_machine_limits(plan.threads);
  print_limits_after(os, limits, limits_after);
  print_profiles(os, results);
  std::vector<bench::TileKernelTimes> tiles;  // --profile: one per head and value dimensions
  if (plan.profile)
    for (const bench::Shape& s : plan.shapes)
      if (std::none_of(tiles.begin(), tiles.end(), [&](const bench::TileKernelTimes& t) {
            return t.head_dim == s.D && t.value_dim == s.Dv();
          }))
        tiles.push_back(bench::time_tile_kernels(s.D, s.Dv(), 0.5));
  print_tile_kernels(os, tiles, limits);
  if (o.json)
    write_text_output("--json", *o.json, to_json(plan, limits, limits_after, results, tiles));
}

}  // namespace xattn::cli
