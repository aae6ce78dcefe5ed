// xattn::dist::attention_split_kv, run by every rank under mpirun (-np 2, 3, 4). Each case makes
// the same random problem on every rank (one seed), gives each rank its shard of the keys
// (uneven, rank 1 empty from 3 ranks on), and checks the result against the float64 oracle
// (src/reference) and the single-process kernel over all keys, and that every rank holds the same
// bits. Bad-input cases check that every rank throws xattn::Error and writes nothing.
//
// No gtest: a failed check must not return early, or the ranks' collective calls would fall out
// of step. Failures are counted, summed over ranks, and rank 0 prints "N passed, M failed".

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "reference/reference.h"
#include "xattn/dist.h"
#include "xattn/xattn.h"

namespace {

using namespace xattn;

constexpr double kInf = std::numeric_limits<double>::infinity();

int g_rank = 0, g_size = 1, g_failed = 0, g_passed = 0;

void fail(const std::string& test, const std::string& why) {
  ++g_failed;
  std::fprintf(stderr, "[rank %d] FAILED %s: %s\n", g_rank, test.c_str(), why.c_str());
}

enum class MaskKind { kNone, kFloat, kBool };

struct Case {
  std::string name;
  int64_t B = 2, Hq = 2, Hkv = 2, Lq = 19, Lk = 53, D = 16, Dv = 16;
  DType dtype = DType::kF32;
  DType out_dtype = DType::kF32;
  bool causal = false;
  CausalAlign align = CausalAlign::kTopLeft;
  Window window;
  std::vector<int64_t> kv_lens, q_lens;
  MaskKind mask = MaskKind::kNone;
  float softcap = 0.0f;
};

// Keys of each rank: uneven, and rank 1 holds none when there are 3 ranks or more.
std::vector<int64_t> shard_starts(int64_t keys, int ranks) {
  std::vector<int64_t> weight(ranks);
  for (int r = 0; r < ranks; ++r) weight[r] = (r == 1 && ranks > 2) ? 0 : r + 1;
  int64_t total = 0;
  for (int64_t w : weight) total += w;
  std::vector<int64_t> start(ranks + 1, 0);
  for (int r = 0, acc = 0; r < ranks; ++r) {
    acc += static_cast<int>(weight[r]);
    start[r + 1] = r + 1 == ranks ? keys : keys * acc / total;
  }
  return start;
}

// A [d0, d1, d2, d3] row-major buffer in f32 or bf16, with its values as the kernel reads them.
struct Buffer {
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  std::vector<double> values;
  Buffer(DType t, std::vector<int64_t> s, std::mt19937_64& rng) : dtype(t), shape(std::move(s)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::normal_distribution<float> normal;
    for (int64_t i = 0; i < n; ++i) {
      float x = normal(rng);
      if (t == DType::kBF16) {
        bf16.push_back(float_to_bf16(x));
        x = bf16_to_float(bf16.back());
      } else {
        f32.push_back(x);
      }
      values.push_back(x);
    }
  }
  const void* data() const {
    return dtype == DType::kF32 ? static_cast<const void*>(f32.data()) : bf16.data();
  }
  // Rows [first, first + count) of dim 2: the view a rank passes as its shard.
  TensorView rows(int64_t first, int64_t count) const {
    const int64_t s2 = shape[3], s1 = shape[2] * s2, s0 = shape[1] * s1;
    return {static_cast<const char*>(data()) + first * s2 * dtype_size(dtype), dtype,
            Layout::strided({shape[0], shape[1], count, shape[3]}, {s0, s1, s2, 1})};
  }
  TensorView all() const { return rows(0, shape[2]); }
};

// An output buffer of some dtype, poisoned, read back as doubles.
struct Output {
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  Output(DType t, std::vector<int64_t> s) : dtype(t), shape(std::move(s)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    bytes.assign(n * dtype_size(t), 0xA5);
  }
  MutableTensorView view() {
    Layout l;
    l.rank = static_cast<int>(shape.size());
    int64_t stride = 1;
    for (int d = l.rank - 1; d >= 0; --d) {
      l.shape[d] = shape[d], l.strides[d] = stride;
      stride *= shape[d];
    }
    return {bytes.data(), dtype, l};
  }
  std::vector<double> read() const {
    std::vector<double> x(bytes.size() / dtype_size(dtype));
    for (size_t i = 0; i < x.size(); ++i) {
      if (dtype == DType::kF32) {
        float f;
        std::memcpy(&f, bytes.data() + 4 * i, 4);
        x[i] = f;
      } else {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        x[i] = bf16_to_float(h);
      }
    }
    return x;
  }
  bool untouched() const {
    return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0xA5; });
  }
};

// The problem every rank makes alike from the case and its seed.
struct Problem {
  Case c;
  std::mt19937_64 rng;
  Buffer q, k, v;
  std::vector<float> mask_f32;  // [B, 1, Lq, Lk] (f32 additive) or empty
  std::vector<uint8_t> mask_bool;
  Problem(const Case& cs, uint64_t seed)
      : c(cs), rng(seed), q(c.dtype, {c.B, c.Hq, c.Lq, c.D}, rng),
        k(c.dtype, {c.B, c.Hkv, c.Lk, c.D}, rng), v(c.dtype, {c.B, c.Hkv, c.Lk, c.Dv}, rng) {
    std::bernoulli_distribution masked(0.2);
    std::normal_distribution<float> normal;
    for (int64_t i = 0; i < c.B * c.Lq * c.Lk; ++i) {
      if (c.mask == MaskKind::kFloat) mask_f32.push_back(masked(rng) ? -INFINITY : normal(rng));
      if (c.mask == MaskKind::kBool) mask_bool.push_back(!masked(rng));
    }
  }
  // Columns [first, first + count) of the [B, 1, Lq, Lk] mask: this rank's part of it.
  TensorView mask(int64_t first, int64_t count) const {
    if (c.mask == MaskKind::kNone) return {};
    const Layout l = Layout::strided({c.B, 1, c.Lq, count}, {c.Lq * c.Lk, 0, c.Lk, 1});
    if (c.mask == MaskKind::kFloat) return {mask_f32.data() + first, DType::kF32, l};
    return {mask_bool.data() + first, DType::kBool, l};
  }
  AttentionParams params() const {
    AttentionParams p;
    p.causal = c.causal;
    p.align = c.align;
    p.window = c.window;
    p.kv_lens = c.kv_lens;
    p.q_lens = c.q_lens;
    p.softcap = c.softcap;
    p.num_threads = 1;
    return p;
  }
  reference::Result oracle() const {
    reference::Problem r;
    r.batch = c.B, r.heads_q = c.Hq, r.heads_kv = c.Hkv, r.q_len = c.Lq, r.kv_len = c.Lk;
    r.head_dim = c.D, r.value_dim = c.Dv;
    r.q = q.values, r.k = k.values, r.v = v.values;
    r.kv_lens = c.kv_lens, r.q_lens = c.q_lens;
    r.causal = c.causal, r.bottom_right = c.align == CausalAlign::kBottomRight;
    r.window_left = c.window.left, r.window_right = c.window.right;
    r.scale = 1.0 / std::sqrt(static_cast<double>(c.D));
    r.softcap = c.softcap;
    if (c.mask != MaskKind::kNone) {
      r.mask.resize(c.B * c.Hq * c.Lq * c.Lk);
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t h = 0; h < c.Hq; ++h)
          for (int64_t ij = 0; ij < c.Lq * c.Lk; ++ij) {
            const int64_t m = b * c.Lq * c.Lk + ij;
            r.mask[(b * c.Hq + h) * c.Lq * c.Lk + ij] =
                c.mask == MaskKind::kFloat ? mask_f32[m] : (mask_bool[m] ? 0.0 : -kInf);
          }
    }
    return reference::attention(r);
  }
};

// Worst |got - want| / tolerance; <= 1 passes. Infinities must match exactly.
double worst_ratio(const std::vector<double>& got, const std::vector<double>& want, double abs_tol,
                   double rel_tol, std::string& where) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    double r;
    if (std::isinf(want[i]) || std::isinf(got[i])) r = got[i] == want[i] ? 0 : kInf;
    else r = std::isnan(got[i]) ? kInf : std::abs(got[i] - want[i]) / (abs_tol + rel_tol * std::abs(want[i]) + 1e-7);
    if (r > worst) worst = r, where = std::to_string(i) + ": got " + std::to_string(got[i]) +
                                      " want " + std::to_string(want[i]);
  }
  return worst;
}

// Every rank's bytes equal rank 0's.
bool same_on_every_rank(const std::vector<uint8_t>& bytes) {
  std::vector<uint8_t> first(bytes);
  MPI_Bcast(first.data(), static_cast<int>(first.size()), MPI_BYTE, 0, MPI_COMM_WORLD);
  const int mine = first == bytes ? 1 : 0;
  int all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

void run_case(const Case& c, uint64_t seed) {
  const Problem p(c, seed);
  const std::vector<int64_t> start = shard_starts(c.Lk, g_size);
  const int64_t first = start[g_rank], count = start[g_rank + 1] - start[g_rank];
  Output out(c.out_dtype, {c.B, c.Hq, c.Lq, c.Dv}), lse(DType::kF32, {c.B, c.Hq, c.Lq});
  AttentionParams params = p.params();
  params.mask = p.mask(first, count);
  try {
    dist::attention_split_kv(p.q.all(), p.k.rows(first, count), p.v.rows(first, count), params,
                             MPI_COMM_WORLD, {out.view(), lse.view()});
  } catch (const Error& e) {
    fail(c.name, std::string("threw: ") + e.what());
    return;  // every rank threw alike (that is what the bad-input cases check)
  }
  // The oracle's tolerance (tests/cpp/oracle_util.cc): f32 arithmetic, 1e-5·max|V| for out,
  // plus the rounding of a 16-bit out; 1e-5 for lse.
  double max_v = 0;
  for (double x : p.v.values) max_v = std::max(max_v, std::abs(x));
  const double rounding = c.out_dtype == DType::kBF16 ? 0x1p-8 : 0;
  const reference::Result want = p.oracle();
  std::string where;
  double r = worst_ratio(out.read(), want.out, 1e-5 * max_v, rounding, where);
  if (r > 1) fail(c.name, "out vs oracle, error/tolerance " + std::to_string(r) + " at " + where);
  r = worst_ratio(lse.read(), want.lse, 1e-5, 1e-5, where);
  if (r > 1) fail(c.name, "lse vs oracle, error/tolerance " + std::to_string(r) + " at " + where);

  // The single-process kernel over all keys, within the sum of both results' tolerances.
  Output whole(c.out_dtype, {c.B, c.Hq, c.Lq, c.Dv}), whole_lse(DType::kF32, {c.B, c.Hq, c.Lq});
  AttentionParams whole_params = p.params();
  whole_params.mask = p.mask(0, c.Lk);
  attention(p.q.all(), p.k.all(), p.v.all(), whole_params, {whole.view(), whole_lse.view()});
  r = worst_ratio(out.read(), whole.read(), 2e-5 * max_v, 2 * rounding, where);
  if (r > 1) fail(c.name, "out vs attention(), error/tolerance " + std::to_string(r) + " at " + where);
  r = worst_ratio(lse.read(), whole_lse.read(), 2e-5, 2e-5, where);
  if (r > 1) fail(c.name, "lse vs attention(), error/tolerance " + std::to_string(r) + " at " + where);

  if (!same_on_every_rank(out.bytes) || !same_on_every_rank(lse.bytes))
    fail(c.name, "ranks hold different bits");
  ++g_passed;
}

// A call that must throw on every rank, and write nothing. `expect` must be in the message.
void expect_error_everywhere(const std::string& name, const std::string& expect,
                             const std::function<void(Output&, Output&)>& call) {
  Output out(DType::kF32, {2, 2, 19, 16}), lse(DType::kF32, {2, 2, 19});
  try {
    call(out, lse);
    fail(name, "no error");
    return;
  } catch (const Error& e) {
    if (std::string(e.what()).find(expect) == std::string::npos)
      fail(name, "message \"" + std::string(e.what()) + "\" lacks \"" + expect + "\"");
    else if (g_rank == 0)
      std::printf("  %s: %s\n", name.c_str(), e.what());
  }
  if (!out.untouched() || !lse.untouched()) fail(name, "outputs were written");
  ++g_passed;
}

void run_bad_inputs() {
  Case c;
  const Problem p(c, 99);
  const std::vector<int64_t> start = shard_starts(c.Lk, g_size);
  const int64_t first = start[g_rank], count = start[g_rank + 1] - start[g_rank];
  const int last = g_size - 1;
  const AttentionParams good = p.params();
  // Other tensors for the odd rank out: head dim 8 instead of 16.
  std::mt19937_64 rng(5);
  const Buffer q8(DType::kF32, {c.B, c.Hq, c.Lq, 8}, rng), k8(DType::kF32, {c.B, c.Hkv, c.Lk, 8}, rng);

  expect_error_everywhere("k_shard head dim differs on the last rank",
                          "rank " + std::to_string(last) + " of " + std::to_string(g_size) +
                              " rejected its arguments: k_shard: dim 3 (D)",
                          [&](Output& o, Output& l) {
                            const TensorView k = g_rank == last ? k8.rows(first, count)
                                                                : p.k.rows(first, count);
                            dist::attention_split_kv(p.q.all(), k, p.v.rows(first, count), good,
                                                     MPI_COMM_WORLD, {o.view(), l.view()});
                          });
  expect_error_everywhere("q and k_shard head dim differ on the last rank",
                          "q: D (head dim) is 16 on rank 0 but 8 on rank " + std::to_string(last),
                          [&](Output& o, Output& l) {
                            const bool odd = g_rank == last;
                            dist::attention_split_kv(odd ? q8.all() : p.q.all(),
                                                     odd ? k8.rows(first, count) : p.k.rows(first, count),
                                                     p.v.rows(first, count), good, MPI_COMM_WORLD,
                                                     {o.view(), l.view()});
                          });
  expect_error_everywhere("a bad window on rank 0", "rank 0 of " + std::to_string(g_size) +
                                                        " rejected its arguments: window:",
                          [&](Output& o, Output& l) {
                            AttentionParams bad = good;
                            if (g_rank == 0) bad.window = {-5, 0};
                            dist::attention_split_kv(p.q.all(), p.k.rows(first, count),
                                                     p.v.rows(first, count), bad, MPI_COMM_WORLD,
                                                     {o.view(), l.view()});
                          });
  expect_error_everywhere("causal on one rank only", "causal: value is 0 on rank 0 but 1 on rank",
                          [&](Output& o, Output& l) {
                            AttentionParams bad = good;
                            bad.causal = g_rank == last;
                            dist::attention_split_kv(p.q.all(), p.k.rows(first, count),
                                                     p.v.rows(first, count), bad, MPI_COMM_WORLD,
                                                     {o.view(), l.view()});
                          });
  const std::vector<int64_t> lens = {c.Lk, 3}, other_lens = {c.Lk, 4}, long_lens = {c.Lk + 1, 3};
  expect_error_everywhere("kv_lens differ on one rank", "kv_lens: list differs between rank 0 and rank",
                          [&](Output& o, Output& l) {
                            AttentionParams bad = good;
                            bad.kv_lens = g_rank == last ? other_lens : lens;
                            dist::attention_split_kv(p.q.all(), p.k.rows(first, count),
                                                     p.v.rows(first, count), bad, MPI_COMM_WORLD,
                                                     {o.view(), l.view()});
                          });
  expect_error_everywhere("kv_lens beyond the whole key length",
                          "kv_lens[0] = " + std::to_string(c.Lk + 1) + " is out of range",
                          [&](Output& o, Output& l) {
                            AttentionParams bad = good;
                            bad.kv_lens = long_lens;
                            dist::attention_split_kv(p.q.all(), p.k.rows(first, count),
                                                     p.v.rows(first, count), bad, MPI_COMM_WORLD,
                                                     {o.view(), l.view()});
                          });
  expect_error_everywhere("out of the wrong shape on rank 1", "rejected its arguments: out:",
                          [&](Output& o, Output& l) {
                            MutableTensorView out = o.view();
                            if (g_rank == 1) out.layout.shape[2] = 18;
                            dist::attention_split_kv(p.q.all(), p.k.rows(first, count),
                                                     p.v.rows(first, count), good, MPI_COMM_WORLD,
                                                     {out, l.view()});
                          });
  expect_error_everywhere("weights asked of one rank", "weights: not available",
                          [&](Output& o, Output& l) {
                            Output w(DType::kF32, {c.B, c.Hq, c.Lq, count});
                            AttentionOutputs outs{o.view(), l.view()};
                            if (g_rank == 0) outs.weights = w.view();
                            dist::attention_split_kv(p.q.all(), p.k.rows(first, count),
                                                     p.v.rows(first, count), good, MPI_COMM_WORLD,
                                                     outs);
                          });
  expect_error_everywhere("MPI_COMM_NULL", "comm: is MPI_COMM_NULL", [&](Output& o, Output& l) {
    dist::attention_split_kv(p.q.all(), p.k.rows(first, count), p.v.rows(first, count), good,
                             MPI_COMM_NULL, {o.view(), l.view()});
  });
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);

  std::vector<Case> cases;
  auto add = [&](const char* name, auto&& edit) {
    Case c;
    c.name = name;
    edit(c);
    cases.push_back(c);
  };
  add("no mask", [](Case&) {});
  add("causal top-left", [](Case& c) { c.causal = true; c.Lq = c.Lk; });
  add("causal top-left, Lq < Lk", [](Case& c) { c.causal = true; });
  add("causal bottom-right", [](Case& c) { c.causal = true, c.align = CausalAlign::kBottomRight; });
  add("window (4, 2)", [](Case& c) { c.window = {4, 2}; c.Lq = c.Lk; });
  add("window (7, 0) bottom-right", [](Case& c) { c.window = {7, 0}, c.align = CausalAlign::kBottomRight; });
  add("kv_lens", [](Case& c) { c.kv_lens = {40, 9}; });
  add("kv_lens, q_lens, causal bottom-right", [](Case& c) {
    c.kv_lens = {40, 9}, c.q_lens = {19, 5}, c.causal = true, c.align = CausalAlign::kBottomRight;
  });
  add("kv_lens, window, top-left", [](Case& c) { c.kv_lens = {53, 30}, c.window = {3, 3}; });
  add("float mask", [](Case& c) { c.mask = MaskKind::kFloat; });
  add("bool mask, causal", [](Case& c) { c.mask = MaskKind::kBool, c.causal = true; });
  add("GQA (Hq 6, Hkv 2), Dv 24", [](Case& c) { c.Hq = 6, c.Hkv = 2, c.Dv = 24; });
  add("bf16, bf16 out, causal", [](Case& c) {
    c.dtype = DType::kBF16, c.out_dtype = DType::kBF16, c.causal = true;
  });
  add("bf16, f32 out, softcap", [](Case& c) { c.dtype = DType::kBF16, c.softcap = 5.0f; });
  add("fewer keys than ranks", [](Case& c) { c.Lk = 2, c.causal = true, c.align = CausalAlign::kBottomRight; });

  for (size_t i = 0; i < cases.size(); ++i) run_case(cases[i], 1000 + i);
  run_bad_inputs();
  // After the errors, the ranks must still be in step: a good call once more.
  run_case(cases[3], 2000);

  int failed = 0, passed = 0;
  MPI_Allreduce(&g_failed, &failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(&g_passed, &passed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (g_rank == 0) std::printf("split_kv on %d ranks: %d passed, %d failed\n", g_size, passed, failed);
  MPI_Finalize();
  return failed ? 1 : 0;
}
