#include "bench_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>

#include "bench/unfused_baseline.h"
#include "xattn/runtime.h"

namespace xattn::cli {
namespace {

using bench::BenchPlan;
using bench::CaseResult;
using bench::MachineLimits;
using bench::StageShares;
using bench::Timing;

template <class... Args>
std::string format(const char* f, Args... args) {
  char buf[96];
  std::snprintf(buf, sizeof buf, f, args...);
  return buf;
}

// `s` padded with blanks to `width` columns; counts UTF-8 characters, not bytes ("×" is one).
std::string pad(const std::string& s, size_t width, bool left) {
  size_t cols = 0;
  for (unsigned char c : s) cols += (c & 0xc0) != 0x80;
  const std::string fill(width > cols ? width - cols : 0, ' ');
  return left ? s + fill : fill + s;
}

// Three or four significant digits from microseconds to seconds.
std::string ms(double seconds) {
  const double m = seconds * 1e3;
  return format(m < 10 ? "%.3f" : m < 100 ? "%.2f" : "%.1f", m);
}
std::string timing(const Timing& t) { return ms(t.median) + " (" + ms(t.min) + ".." + ms(t.max) + ")"; }
std::string rate(double x) { return format("%.1f", x); }
std::string percent(std::optional<double> f, const char* absent = "-") {
  return f ? format("%.1f%%", *f * 100) : absent;
}
std::string ratio(std::optional<double> x) { return x ? format("%.2f×", *x) : "-"; }

struct Column {
  std::string head;
  size_t width;
  bool left;
  std::function<std::string(const CaseResult&)> cell;
};

bool has_f32_and_other(const std::vector<bench::Variant>& v) {
  const auto f32 = [](const bench::Variant& x) { return x.dtype == DType::kF32; };
  return std::any_of(v.begin(), v.end(), f32) && !std::all_of(v.begin(), v.end(), f32);
}

// The table's columns for this plan: ratios that cannot occur in it are left out.
std::vector<Column> columns(const BenchPlan& plan) {
  size_t name_width = 5;
  for (const bench::Shape& s : plan.shapes) name_width = std::max(name_width, s.name.size());
  std::vector<Column> c = {
      {"shape", name_width, true, [](const CaseResult& r) { return r.shape.name; }},
      {"dtype", 5, true, [](const CaseResult& r) { return r.variant.label(); }},
      {"thr", 3, false, [](const CaseResult& r) { return std::to_string(r.threads); }},
      {"xattn ms (min..max)", 25, false, [](const CaseResult& r) { return timing(r.xattn); }},
      {"GFLOP/s", 8, false, [](const CaseResult& r) { return rate(r.gflops); }},
      {"%peak", 6, false, [](const CaseResult& r) { return percent(r.peak_fraction, "n/a"); }},
  };
  if (has_f32_and_other(plan.variants)) {
    c.push_back({"×f32", 6, false, [](const CaseResult& r) { return ratio(r.over_f32); }});
  }
  if (plan.threads.size() > 1) {
    c.push_back({"×thr", 6, false, [](const CaseResult& r) { return ratio(r.thread_speedup); }});
  }
  if (plan.backward) {
    c.push_back({"bwd ms", 9, false, [](const CaseResult& r) { return ms(r.backward->median); }});
    c.push_back({"bwd GF/s", 8, false,
                 [](const CaseResult& r) { return rate(*r.backward_gflops); }});
    c.push_back({"bwd %pk", 7, false,
                 [](const CaseResult& r) { return percent(r.backward_peak_fraction, "n/a"); }});
    c.push_back({"bwd/fwd", 7, false,
                 [](const CaseResult& r) { return ratio(r.backward_over_forward); }});
  }
  if (plan.time_baseline) {
    c.push_back({"base ms", 9, false, [](const CaseResult& r) { return ms(r.baseline->median); }});
    c.push_back({"speed-up", 8, false, [](const CaseResult& r) { return ratio(r.speedup); }});
  }
  if (std::any_of(plan.shapes.begin(), plan.shapes.end(),
                  [](const bench::Shape& s) { return s.bandwidth_bound(); })) {
    c.push_back(
        {"K/V GB/s", 8, false, [](const CaseResult& r) { return r.kv_gbps ? rate(*r.kv_gbps) : "-"; }});
    c.push_back({"%copy", 6, false, [](const CaseResult& r) { return percent(r.kv_copy_fraction); }});
    c.push_back({"%read", 6, false, [](const CaseResult& r) { return percent(r.kv_read_fraction); }});
  }
  c.push_back({"max err", 8, false, [](const CaseResult& r) { return format("%.1e", r.max_err); }});
  return c;
}

void print_line(std::ostream& os, const std::vector<Column>& cols,
                const std::function<std::string(const Column&)>& text) {
  std::string line;
  for (const Column& c : cols) line += (line.empty() ? "" : "  ") + pad(text(c), c.width, c.left);
  os << line << std::endl;  // flushed: rows appear as cases finish
}

nlohmann::ordered_json optional_number(std::optional<double> x) {
  return x ? nlohmann::ordered_json(*x) : nlohmann::ordered_json(nullptr);
}

void print_limits(std::ostream& os, const std::vector<MachineLimits>& limits) {
  os << "  threads  f32 FMA GFLOP/s  bf16 dot GFLOP/s  copy GB/s  read GB/s\n";
  for (const MachineLimits& m : limits) {
    os << pad(std::to_string(m.threads), 9, false) << pad(rate(m.fma_gflops), 17, false)
       << pad(m.bf16_gflops ? rate(*m.bf16_gflops) : "n/a", 18, false) << pad(rate(m.copy_gbps), 11, false)
       << pad(rate(m.read_gbps), 11, false) << "\n";
  }
}

nlohmann::ordered_json limits_json(const std::vector<MachineLimits>& limits) {
  auto array = nlohmann::ordered_json::array();
  for (const MachineLimits& m : limits) {
    array.push_back({{"threads", m.threads},
                     {"fma_gflops", m.fma_gflops},
                     {"bf16_dot_gflops", optional_number(m.bf16_gflops)},
                     {"copy_gbps", m.copy_gbps},
                     {"read_gbps", m.read_gbps}});
  }
  return array;
}

// Beyond this relative change of a limit during the run, print_limits_after warns.
constexpr double kLimitsSettled = 0.1;

// The largest relative change |after / before - 1| of any limit at any thread count.
double limits_change(const std::vector<MachineLimits>& before,
                     const std::vector<MachineLimits>& after) {
  double change = 0;
  const auto compare = [&](double x, double y) { change = std::max(change, std::abs(y / x - 1)); };
  for (size_t t = 0; t < before.size() && t < after.size(); ++t) {
    compare(before[t].fma_gflops, after[t].fma_gflops);
    if (before[t].bf16_gflops && after[t].bf16_gflops)
      compare(*before[t].bf16_gflops, *after[t].bf16_gflops);
    compare(before[t].copy_gbps, after[t].copy_gbps);
    compare(before[t].read_gbps, after[t].read_gbps);
  }
  return change;
}

// One thread's FMA peak: measured at one thread, else the first count's share per thread.
double one_thread_peak(const std::vector<MachineLimits>& limits) {
  for (const MachineLimits& l : limits)
    if (l.threads == 1) return l.fma_gflops;
  return limits.empty() ? 0 : limits[0].fma_gflops / limits[0].threads;
}

// The tile kernels' figures: GFLOP/s of each product and of the whole tile with their fractions
// of one thread's FMA peak, and the softmax's time per vector of scores and share of the tile.
struct TileFigures {
  double scores_gflops, weighted_sum_gflops, tile_gflops;
  double scores_peak, weighted_sum_peak, tile_peak;
  double softmax_ns_per_vector, softmax_share;
};

TileFigures tile_figures(const bench::TileKernelTimes& t, double peak) {
  const double scores = t.score_flops() / t.scores * 1e-9;
  const double weighted_sum = t.weighted_sum_flops() / t.weighted_sum * 1e-9;
  const double tile = (t.score_flops() + t.weighted_sum_flops()) / t.tile * 1e-9;
  return {scores, weighted_sum, tile, scores / peak, weighted_sum / peak, tile / peak,
          t.softmax / t.score_vectors() * 1e9, t.softmax / t.tile};
}

}  // namespace

void print_machine(std::ostream& os, const BenchPlan& plan, const std::vector<MachineLimits>& limits) {
  os << "xattn " << version() << " bench · SIMD target " << simd_target() << " · baseline "
     << bench::blas_description() << "\n"
     << "each case: 1 warm-up call, then at least " << plan.min_runs << " calls and " << plan.min_seconds
     << " s; ms per call, median (min..max)\n"
     << "machine limits, measured in this run:\n";
  print_limits(os, limits);
  os << "cpu: " << cpu_name() << " · bf16 dot products: " << (bf16_dot_products() ? "yes" : "no")
     << " (" << bf16_dot_reason() << ")\n"
     << "bf16p: bf16 inputs with bf16 probabilities for P·V (AttentionParams::bf16_probabilities)\n"
        "%peak: of the FMA peak (f32, and bf16 widened to f32) or the bf16 dot peak (bf16 with dot "
        "products); ×f32: f32 time / bf16 time; ×thr: "
        "time at the first thread count / this one;\n"
        "speed-up: unfused baseline time / xattn time; K/V GB/s (Lq = 1): K+V bytes / time, %copy and "
        "%read of the bandwidths above (over 100% when K and V fit in cache);\n"
        "max err: max |xattn - baseline| over the output\n\n";
}

void print_limits_after(std::ostream& os, const std::vector<MachineLimits>& before,
                        const std::vector<MachineLimits>& after) {
  os << "\nmachine limits, measured again after the cases:\n";
  print_limits(os, after);
  const double change = limits_change(before, after);
  if (change > kLimitsSettled)
    os << "they moved by " << rate(100 * change) << "% from the start (other load on the host?): "
       << "the fractions above may be off by as much; compare the medians of several runs\n";
}

void print_table_head(std::ostream& os, const BenchPlan& plan) {
  print_line(os, columns(plan), [](const Column& c) { return c.head; });
}

void print_row(std::ostream& os, const BenchPlan& plan, const CaseResult& r) {
  print_line(os, columns(plan), [&](const Column& c) { return c.cell(r); });
}

void print_profiles(std::ostream& os, const std::vector<CaseResult>& results) {
  const auto line = [&](const char* pass, const StageShares& p) {
    os << "  " << pass << ":";
    char cell[64];
    for (const auto& [name, share] : p.stages) {
      std::snprintf(cell, sizeof cell, " %s %.1f%%", name.c_str(), 100 * share);
      os << cell;
    }
    std::snprintf(cell, sizeof cell, " · other %.1f%%\n", 100 * p.other);
    os << cell;
  };
  bool first = true;
  for (const CaseResult& r : results) {
    if (!r.forward_profile) continue;
    if (first)
      os << "\nwhere the time goes: each stage's share of the threads' time in the kernel "
            "(time-stamp counter; other: thread start and wait, partitioning, the rest)\n";
    first = false;
    os << r.shape.name << " " << r.variant.label() << " " << r.threads << " threads\n";
    line("forward", *r.forward_profile);
    if (r.backward_profile) line("backward", *r.backward_profile);
  }
}

void print_tile_kernels(std::ostream& os, const std::vector<bench::TileKernelTimes>& tiles,
                        const std::vector<MachineLimits>& limits) {
  if (tiles.empty()) return;
  const double peak = one_thread_peak(limits);
  os << "\nthe tile kernels alone (one thread, operands in cache; GFLOP/s and % of one thread's "
        "FMA peak, "
     << rate(peak) << " GFLOP/s): the ceiling of the stages above\n";
  for (const bench::TileKernelTimes& t : tiles) {
    const TileFigures f = tile_figures(t, peak);
    const std::string dims =
        std::to_string(t.head_dim) +
        (t.value_dim != t.head_dim ? ", Dv " + std::to_string(t.value_dim) : "");
    os << "  D " << dims << ", " << t.rows << " rows x " << t.keys << " keys: scores "
       << rate(f.scores_gflops) << " (" << percent(f.scores_peak) << ") · softmax "
       << format("%.2f ns per vector of %d scores (%.1f%% of the tile)", f.softmax_ns_per_vector,
                 static_cast<int>(t.lanes), 100 * f.softmax_share)
       << " · weighted sum " << rate(f.weighted_sum_gflops) << " (" << percent(f.weighted_sum_peak)
       << ") · the tile " << rate(f.tile_gflops) << " (" << percent(f.tile_peak) << ")\n";
  }
}

std::string to_json(const BenchPlan& plan, const std::vector<MachineLimits>& limits,
                    const std::vector<MachineLimits>& limits_after,
                    const std::vector<CaseResult>& results,
                    const std::vector<bench::TileKernelTimes>& tiles) {
  using json = nlohmann::ordered_json;
  json machine = {{"xattn_version", version()},
                  {"simd_target", simd_target()},
                  {"cpu", cpu_name()},
                  {"bf16_dot_products", bf16_dot_products()},
                  {"tiles", kernel_tiles()},
                  {"blas", bench::blas_description()},
                  {"default_threads", default_num_threads()},
                  {"limits", limits_json(limits)},
                  {"limits_after", limits_json(limits_after)},
                  {"limits_change", limits_change(limits, limits_after)}};
  json rows = json::array();
  for (const CaseResult& r : results) {
    const bench::Shape& s = r.shape;
    const auto in_ms = [](const std::optional<Timing>& t, double Timing::*field) {
      return t ? json((*t).*field * 1e3) : json(nullptr);
    };
    const auto baseline_ms = [&](double Timing::*field) { return in_ms(r.baseline, field); };
    const auto backward_ms = [&](double Timing::*field) { return in_ms(r.backward, field); };
    rows.push_back({{"name", s.name},
                    {"B", s.B},
                    {"Hq", s.Hq},
                    {"Hkv", s.Hkv},
                    {"Lq", s.Lq},
                    {"Lk", s.Lk},
                    {"D", s.D},
                    {"Dv", s.Dv()},
                    {"causal", s.causal},
                    {"dtype", r.variant.dtype == DType::kBF16 ? "bf16" : "f32"},
                    {"bf16_probabilities", r.variant.bf16_probabilities},
                    {"variant", r.variant.label()},
                    {"threads", r.threads},
                    {"calls", r.xattn.calls},
                    {"xattn_ms", r.xattn.median * 1e3},
                    {"xattn_ms_min", r.xattn.min * 1e3},
                    {"xattn_ms_max", r.xattn.max * 1e3},
                    {"gflops", r.gflops},
                    {"peak_fraction", optional_number(r.peak_fraction)},
                    {"over_f32", optional_number(r.over_f32)},
                    {"thread_speedup", optional_number(r.thread_speedup)},
                    {"baseline_calls", r.baseline ? json(r.baseline->calls) : json(nullptr)},
                    {"baseline_ms", baseline_ms(&Timing::median)},
                    {"baseline_ms_min", baseline_ms(&Timing::min)},
                    {"baseline_ms_max", baseline_ms(&Timing::max)},
                    {"speedup", optional_number(r.speedup)},
                    {"backward_ms", backward_ms(&Timing::median)},
                    {"backward_ms_min", backward_ms(&Timing::min)},
                    {"backward_ms_max", backward_ms(&Timing::max)},
                    {"backward_gflops", optional_number(r.backward_gflops)},
                    {"backward_peak_fraction", optional_number(r.backward_peak_fraction)},
                    {"backward_over_forward", optional_number(r.backward_over_forward)},
                    {"kv_gbps", optional_number(r.kv_gbps)},
                    {"kv_copy_fraction", optional_number(r.kv_copy_fraction)},
                    {"kv_read_fraction", optional_number(r.kv_read_fraction)},
                    {"kv_beyond_llc", r.kv_beyond_llc ? json(*r.kv_beyond_llc) : json(nullptr)},
                    {"max_err", r.max_err},
                    {"ref_max_abs", r.ref_max_abs},
                    {"v_max_abs", r.v_max_abs}});
    for (const auto& [key, shares] : {std::pair{"forward_profile", &r.forward_profile},
                                      std::pair{"backward_profile", &r.backward_profile}}) {
      if (!*shares) continue;
      json stages = json::object();
      for (const auto& [name, share] : (*shares)->stages) stages[name] = share;
      stages["other"] = (*shares)->other;
      rows.back()[key] = stages;
    }
  }
  const json settings = {
      {"min_runs", plan.min_runs}, {"min_seconds", plan.min_seconds}, {"time_baseline", plan.time_baseline}};
  json tile_kernels = json::array();
  const double peak = one_thread_peak(limits);
  for (const bench::TileKernelTimes& t : tiles) {
    const TileFigures f = tile_figures(t, peak);
    tile_kernels.push_back({{"head_dim", t.head_dim},
                            {"value_dim", t.value_dim},
                            {"rows", t.rows},
                            {"keys", t.keys},
                            {"scores_gflops", f.scores_gflops},
                            {"scores_peak_fraction", f.scores_peak},
                            {"softmax_ns_per_vector", f.softmax_ns_per_vector},
                            {"softmax_tile_fraction", f.softmax_share},
                            {"weighted_sum_gflops", f.weighted_sum_gflops},
                            {"weighted_sum_peak_fraction", f.weighted_sum_peak},
                            {"tile_gflops", f.tile_gflops},
                            {"tile_peak_fraction", f.tile_peak}});
  }
  return json{{"machine", machine},
              {"settings", settings},
              {"results", rows},
              {"tile_kernels", tile_kernels}}
             .dump(2) +
         "\n";
}

}  // namespace xattn::cli
