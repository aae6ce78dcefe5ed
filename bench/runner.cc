#include "bench/runner.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <utility>

#include "bench/operands.h"
#include "bench/timing.h"
#include "bench/unfused_baseline.h"
#include "core/cpu_profile.h"
#include "core/profile.h"
#include "xattn/attention.h"
#include "xattn/half.h"
#include "xattn/runtime.h"

namespace xattn::bench {
namespace {

double max_abs(const TensorView& t, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float x = t.dtype == DType::kBF16 ? bf16_to_float(static_cast<const uint16_t*>(t.data)[i])
                                            : static_cast<const float*>(t.data)[i];
    m = std::max(m, std::fabs(static_cast<double>(x)));
  }
  return m;
}

Timing summarize(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  const size_t n = t.size();
  const double median = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
  return {median, t.front(), t.back(), static_cast<int>(n)};
}

struct Errors {
  double max_err = 0, ref_max_abs = 0;
};

Errors compare(const Operands& x, const float* ref) {
  Errors e;
  for (int64_t i = 0; i < x.out_size(); ++i) {
    const double d = std::fabs(static_cast<double>(x.out_at(i)) - ref[i]);
    if (!std::isnan(e.max_err) && !(d <= e.max_err)) e.max_err = d;  // a NaN difference stays
    e.ref_max_abs = std::max(e.ref_max_abs, std::fabs(static_cast<double>(ref[i])));
  }
  return e;
}

// Runs `call` with the stage counters on, a few times for at least 0.1 s, and returns the
// shares of stages [first, last) in the threads' time (wall time × threads).
StageShares profile_stages(const std::function<void()>& call, int threads, int first, int last) {
  namespace profile = core::profile;
  const auto start = std::chrono::steady_clock::now();
  const uint64_t t0 = profile::now();
  profile::start();
  int calls = 0;
  while (calls < 3 || std::chrono::steady_clock::now() - start < std::chrono::milliseconds(100))
    call(), ++calls;
  const std::array<uint64_t, profile::kStages> cycles = profile::stop();
  const double total = static_cast<double>(profile::now() - t0) * threads;
  StageShares shares;
  shares.other = 1;
  for (int s = first; s < last; ++s) {
    const double share = cycles[s] / total;
    shares.stages.emplace_back(profile::stage_name(static_cast<profile::Stage>(s)), share);
    shares.other -= share;
  }
  return shares;
}

CaseResult run_case(Operands& in, UnfusedBaseline& baseline, const Variant& variant, int threads,
                    const MachineLimits& limits, const BenchPlan& plan) {
  CaseResult r;
  r.shape = in.shape();
  r.variant = variant;
  r.threads = threads;

  AttentionParams params;
  params.causal = r.shape.causal;
  params.num_threads = threads;
  params.bf16_probabilities = variant.bf16_probabilities;
  const AttentionOutputs outputs{in.out()};
  r.xattn = time_calls([&] { attention(in.q(), in.k(), in.v(), params, outputs); }, plan.min_runs,
                       plan.min_seconds);
  r.gflops = flops(r.shape) / r.xattn.median * 1e-9;
  const std::optional<double> peak =
      variant.dtype == DType::kBF16 && bf16_dot_products() ? limits.bf16_gflops
                                                           : std::optional<double>(limits.fma_gflops);
  if (peak) r.peak_fraction = r.gflops / *peak;
  if (r.shape.bandwidth_bound()) {
    r.kv_gbps = kv_bytes(r.shape, variant.dtype) / r.xattn.median * 1e-9;
    r.kv_copy_fraction = *r.kv_gbps / limits.copy_gbps;
    r.kv_read_fraction = *r.kv_gbps / limits.read_gbps;
    r.kv_beyond_llc = kv_bytes(r.shape, variant.dtype) > core::cpu_profile().llc_bytes;
  }

  if (plan.backward) {
    BackwardOperands grad(in);
    AttentionOutputs with_lse{in.out(), grad.lse()};
    attention(in.q(), in.k(), in.v(), params, with_lse);
    r.backward = time_calls(
        [&] {
          attention_backward(in.q(), in.k(), in.v(), in.out(), grad.lse(), grad.dout(), params,
                             grad.grads());
        },
        plan.min_runs, plan.min_seconds);
    r.backward_gflops = 2.5 * flops(r.shape) / r.backward->median * 1e-9;
    if (peak) r.backward_peak_fraction = *r.backward_gflops / *peak;
    r.backward_over_forward = r.backward->median / r.xattn.median;
    if (plan.profile)
      r.backward_profile = profile_stages(
          [&] {
            attention_backward(in.q(), in.k(), in.v(), in.out(), grad.lse(), grad.dout(), params,
                               grad.grads());
          },
          threads, core::profile::kBwdPack, core::profile::kStages);
  }
  if (plan.profile)
    r.forward_profile =
        profile_stages([&] { attention(in.q(), in.k(), in.v(), params, outputs); }, threads,
                       core::profile::kPackQueries, core::profile::kBwdPack);

  if (plan.time_baseline) {
    r.baseline = time_calls([&] { baseline.run(threads); }, plan.min_runs, plan.min_seconds);
    r.speedup = r.baseline->median / r.xattn.median;
  } else {
    baseline.run(threads);
  }
  const Errors e = compare(in, baseline.output());
  r.max_err = e.max_err;
  r.ref_max_abs = e.ref_max_abs;
  const Shape& s = r.shape;
  r.v_max_abs = max_abs(in.v(), s.B * s.Hkv * s.Lk * s.Dv());
  return r;
}

}  // namespace

std::string Variant::label() const {
  if (dtype == DType::kF32) return "f32";
  return bf16_probabilities ? "bf16p" : "bf16";
}

Timing time_calls(const std::function<void()>& call, int min_runs, double min_seconds) {
  call();  // warm-up: pages of outputs and scratch, the thread pool, caches
  std::vector<double> times;
  const double start = now_seconds();
  while (static_cast<int>(times.size()) < min_runs || now_seconds() - start < min_seconds) {
    const double t0 = now_seconds();
    call();
    times.push_back(now_seconds() - t0);
  }
  return summarize(std::move(times));
}

std::vector<CaseResult> run_plan(const BenchPlan& plan, const std::vector<MachineLimits>& limits,
                                 const std::function<void(const CaseResult&)>& on_result) {
  std::vector<CaseResult> results;
  for (const Shape& shape : plan.shapes) {
    std::vector<double> f32_median(plan.threads.size(), 0.0);  // 0: f32 not run (yet)
    for (const Variant& variant : plan.variants) {
      Operands operands(shape, variant.dtype);
      UnfusedBaseline baseline(operands);
      for (size_t t = 0; t < plan.threads.size(); ++t) {
        CaseResult r = run_case(operands, baseline, variant, plan.threads[t], limits[t], plan);
        if (variant.dtype == DType::kF32) f32_median[t] = r.xattn.median;
        else if (f32_median[t] > 0) r.over_f32 = f32_median[t] / r.xattn.median;
        // The first thread count's row of this shape and dtype was pushed t rows ago.
        if (t > 0) r.thread_speedup = results[results.size() - t].xattn.median / r.xattn.median;
        on_result(r);
        results.push_back(std::move(r));
      }
    }
  }
  return results;
}

}  // namespace xattn::bench
