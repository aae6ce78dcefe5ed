// xattn::dist::attention_split_kv and its backward, run by every rank under mpirun (-np 2, 3, 4).
// Each case makes the same random problem on every rank (one seed), gives each rank its shard of
// the keys (uneven, rank 1 empty from 3 ranks on), and checks the result (out and lse; dq and the
// shard's dk and dv) against the float64 oracle (src/reference) and the single-process kernels
// over all keys, and that every rank holds the same bits of out, lse and dq. Bad-input cases
// check that every rank throws xattn::Error and writes nothing.
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
  int64_t diagonal_offset = 0;
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

// This rank's keys of the whole sequence.
struct Keys {
  int64_t first, count;
};
Keys my_keys(int64_t keys) {
  const std::vector<int64_t> start = shard_starts(keys, g_size);
  return {start[g_rank], start[g_rank + 1] - start[g_rank]};
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

// An output buffer of some dtype, poisoned, read back as doubles. One spare element, so that
// an empty view (an empty shard's dk) still has data.
struct Output {
  DType dtype;
  std::vector<int64_t> shape;
  int64_t count = 1;
  std::vector<uint8_t> bytes;
  Output(DType t, std::vector<int64_t> s) : dtype(t), shape(std::move(s)) {
    for (int64_t d : shape) count *= d;
    bytes.assign((count + 1) * dtype_size(t), 0xA5);
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
    std::vector<double> x(count);
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
    p.diagonal_offset = c.diagonal_offset;
    p.kv_lens = c.kv_lens;
    p.q_lens = c.q_lens;
    p.softcap = c.softcap;
    p.num_threads = 1;
    return p;
  }
  reference::Result oracle() const { return reference::attention(oracle_problem()); }
  reference::Problem oracle_problem() const {
    reference::Problem r;
    r.batch = c.B, r.heads_q = c.Hq, r.heads_kv = c.Hkv, r.q_len = c.Lq, r.kv_len = c.Lk;
    r.head_dim = c.D, r.value_dim = c.Dv;
    r.q = q.values, r.k = k.values, r.v = v.values;
    r.kv_lens = c.kv_lens, r.q_lens = c.q_lens;
    r.causal = c.causal, r.bottom_right = c.align == CausalAlign::kBottomRight;
    r.window_left = c.window.left, r.window_right = c.window.right;
    r.diagonal_offset = c.diagonal_offset;
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
    return r;
  }
};

// Worst |got - want| / (abs_tol(i) + rel_tol·|want|); <= 1 passes. Infinities must match.
double worst_ratio(const std::vector<double>& got, const std::vector<double>& want,
                   const std::function<double(size_t)>& abs_tol, double rel_tol, std::string& where) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    double r;
    if (std::isinf(want[i]) || std::isinf(got[i])) r = got[i] == want[i] ? 0 : kInf;
    else r = std::isnan(got[i]) ? kInf : std::abs(got[i] - want[i]) / (abs_tol(i) + rel_tol * std::abs(want[i]) + 1e-7);
    if (r > worst) worst = r, where = std::to_string(i) + ": got " + std::to_string(got[i]) +
                                      " want " + std::to_string(want[i]);
  }
  return worst;
}

void check(const std::string& test, const std::string& what, const std::vector<double>& got,
           const std::vector<double>& want, const std::function<double(size_t)>& abs_tol,
           double rel_tol) {
  if (got.size() != want.size()) {
    fail(test, what + ": size " + std::to_string(got.size()) + " vs " + std::to_string(want.size()));
    return;
  }
  std::string where;
  const double r = worst_ratio(got, want, abs_tol, rel_tol, where);
  if (r > 1) fail(test, what + ", error/tolerance " + std::to_string(r) + " at " + where);
}

std::function<double(size_t)> flat(double tol) {
  return [tol](size_t) { return tol; };
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
  const auto [first, count] = my_keys(c.Lk);
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
  check(c.name, "out vs oracle", out.read(), want.out, flat(1e-5 * max_v), rounding);
  check(c.name, "lse vs oracle", lse.read(), want.lse, flat(1e-5), 1e-5);

  // The single-process kernel over all keys, within the sum of both results' tolerances.
  Output whole(c.out_dtype, {c.B, c.Hq, c.Lq, c.Dv}), whole_lse(DType::kF32, {c.B, c.Hq, c.Lq});
  AttentionParams whole_params = p.params();
  whole_params.mask = p.mask(0, c.Lk);
  attention(p.q.all(), p.k.all(), p.v.all(), whole_params, {whole.view(), whole_lse.view()});
  check(c.name, "out vs attention()", out.read(), whole.read(), flat(2e-5 * max_v), 2 * rounding);
  check(c.name, "lse vs attention()", lse.read(), whole_lse.read(), flat(2e-5), 2e-5);

  if (!same_on_every_rank(out.bytes) || !same_on_every_rank(lse.bytes))
    fail(c.name, "ranks hold different bits");
  ++g_passed;
}

// The shard's rows of a whole-sequence row-major [d0, d1, L, W] array (dk or dv over all keys).
std::vector<double> shard_rows(const std::vector<double>& full, int64_t d01, int64_t L, int64_t W,
                               const Keys& keys) {
  std::vector<double> part;
  for (int64_t i = 0; i < d01; ++i)
    part.insert(part.end(), full.begin() + (i * L + keys.first) * W,
                full.begin() + (i * L + keys.first + keys.count) * W);
  return part;
}

double rounding_of(DType t) { return t == DType::kBF16 ? 0x1p-8 : 0; }

// attention_split_kv's f32 out and lse, then attention_split_kv_backward with the same dout on
// every rank (gradients in the case's out dtype): dq against the oracle's and one process's
// attention_backward() over all keys, this shard's dk and dv against their rows of those, and
// dq's bits alike on every rank.
void run_backward_case(const Case& c, uint64_t seed) {
  const Problem p(c, seed);
  std::mt19937_64 rng(seed + 1);
  const Buffer dout(c.dtype, {c.B, c.Hq, c.Lq, c.Dv}, rng);
  const Keys keys = my_keys(c.Lk);
  const TensorView k = p.k.rows(keys.first, keys.count), v = p.v.rows(keys.first, keys.count);
  AttentionParams params = p.params();
  params.mask = p.mask(keys.first, keys.count);
  const DType g = c.out_dtype;
  Output out(DType::kF32, {c.B, c.Hq, c.Lq, c.Dv}), lse(DType::kF32, {c.B, c.Hq, c.Lq});
  Output dq(g, {c.B, c.Hq, c.Lq, c.D}), dk(g, {c.B, c.Hkv, keys.count, c.D}),
      dv(g, {c.B, c.Hkv, keys.count, c.Dv});
  const std::string name = c.name + " (backward)";
  try {
    dist::attention_split_kv(p.q.all(), k, v, params, MPI_COMM_WORLD, {out.view(), lse.view()});
    dist::attention_split_kv_backward(p.q.all(), k, v, out.view(), lse.view(), dout.all(), params,
                                      MPI_COMM_WORLD, {dq.view(), dk.view(), dv.view()});
  } catch (const Error& e) {
    fail(name, std::string("threw: ") + e.what());
    return;
  }
  // tests/cpp/backward_test.cc's tolerance: (1e-5 + 2^-21·max|lse|) times the sum of the
  // terms' sizes (the oracle's *_scale), plus a 16-bit gradient's rounding; against
  // attention_backward() over all keys within twice that.
  const reference::Problem rp = p.oracle_problem();
  const reference::Gradients want = reference::attention_backward(rp, dout.values);
  double max_lse = 0;
  for (double l : reference::attention(rp).lse)
    if (std::isfinite(l)) max_lse = std::max(max_lse, std::abs(l));
  const double rel = 1e-5 + 0x1p-21 * max_lse, round = rounding_of(g);
  const std::vector<double> dk_scale = shard_rows(want.dk_scale, c.B * c.Hkv, c.Lk, c.D, keys),
                            dv_scale = shard_rows(want.dv_scale, c.B * c.Hkv, c.Lk, c.Dv, keys);
  const auto scaled = [rel](const std::vector<double>& s, double times) {
    return [&s, rel, times](size_t i) { return times * rel * s[i]; };
  };
  check(name, "dq vs oracle", dq.read(), want.dq, scaled(want.dq_scale, 1), round);
  check(name, "dk vs oracle", dk.read(), shard_rows(want.dk, c.B * c.Hkv, c.Lk, c.D, keys),
        scaled(dk_scale, 1), round);
  check(name, "dv vs oracle", dv.read(), shard_rows(want.dv, c.B * c.Hkv, c.Lk, c.Dv, keys),
        scaled(dv_scale, 1), round);

  AttentionParams whole = p.params();
  whole.mask = p.mask(0, c.Lk);
  Output wout(DType::kF32, {c.B, c.Hq, c.Lq, c.Dv}), wlse(DType::kF32, {c.B, c.Hq, c.Lq});
  attention(p.q.all(), p.k.all(), p.v.all(), whole, {wout.view(), wlse.view()});
  Output wdq(g, {c.B, c.Hq, c.Lq, c.D}), wdk(g, {c.B, c.Hkv, c.Lk, c.D}),
      wdv(g, {c.B, c.Hkv, c.Lk, c.Dv});
  attention_backward(p.q.all(), p.k.all(), p.v.all(), wout.view(), wlse.view(), dout.all(), whole,
                     {wdq.view(), wdk.view(), wdv.view()});
  check(name, "dq vs attention_backward()", dq.read(), wdq.read(), scaled(want.dq_scale, 2),
        2 * round);
  check(name, "dk vs attention_backward()", dk.read(),
        shard_rows(wdk.read(), c.B * c.Hkv, c.Lk, c.D, keys), scaled(dk_scale, 2), 2 * round);
  check(name, "dv vs attention_backward()", dv.read(),
        shard_rows(wdv.read(), c.B * c.Hkv, c.Lk, c.Dv, keys), scaled(dv_scale, 2), 2 * round);

  if (!same_on_every_rank(dq.bytes)) fail(name, "ranks hold different bits of dq");
  ++g_passed;
}

// A call that must throw on every rank, and write none of `outputs`. `expect` must be in the
// message.
void expect_error_everywhere(const std::string& name, const std::string& expect,
                             const std::vector<const Output*>& outputs,
                             const std::function<void()>& call) {
  try {
    call();
    fail(name, "no error");
    return;
  } catch (const Error& e) {
    if (std::string(e.what()).find(expect) == std::string::npos)
      fail(name, "message \"" + std::string(e.what()) + "\" lacks \"" + expect + "\"");
    else if (g_rank == 0)
      std::printf("  %s: %s\n", name.c_str(), e.what());
  }
  for (const Output* o : outputs)
    if (!o->untouched()) fail(name, "outputs were written");
  ++g_passed;
}

// The same for a forward call, into out and lse of the default case's shape.
void expect_error_everywhere(const std::string& name, const std::string& expect,
                             const std::function<void(Output&, Output&)>& call) {
  Output out(DType::kF32, {2, 2, 19, 16}), lse(DType::kF32, {2, 2, 19});
  expect_error_everywhere(name, expect, {&out, &lse}, [&] { call(out, lse); });
}

void run_bad_inputs() {
  Case c;
  const Problem p(c, 99);
  const auto [first, count] = my_keys(c.Lk);
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

// The backward's arguments, which a bad-input case edits on some ranks.
struct BackwardArgs {
  TensorView q, k, v, out, lse, dout;
  AttentionParams params;
  AttentionGradients grads;
};

// The backward of a good forward, with bad arguments on some ranks: every rank throws, and no
// gradient is written.
void run_backward_bad_inputs() {
  Case c;
  const Problem p(c, 99);
  Case bf16_case = c;
  bf16_case.dtype = DType::kBF16;
  const Problem bf16(bf16_case, 99);
  std::mt19937_64 rng(7);
  const Buffer dout(c.dtype, {c.B, c.Hq, c.Lq, c.Dv}, rng);
  const Keys keys = my_keys(c.Lk);
  const TensorView k = p.k.rows(keys.first, keys.count), v = p.v.rows(keys.first, keys.count);
  const AttentionParams good = p.params();
  Output out(DType::kF32, {c.B, c.Hq, c.Lq, c.Dv}), lse(DType::kF32, {c.B, c.Hq, c.Lq});
  dist::attention_split_kv(p.q.all(), k, v, good, MPI_COMM_WORLD, {out.view(), lse.view()});
  const std::string last = std::to_string(g_size - 1), of = " of " + std::to_string(g_size);
  const bool is_last = g_rank == g_size - 1;

  const auto expect = [&](const std::string& name, const std::string& message,
                          const std::function<void(BackwardArgs&)>& edit) {
    Output dq(DType::kF32, {c.B, c.Hq, c.Lq, c.D}), dk(DType::kF32, {c.B, c.Hkv, keys.count, c.D}),
        dv(DType::kF32, {c.B, c.Hkv, keys.count, c.Dv});
    BackwardArgs a{p.q.all(), k, v, out.view(), lse.view(), dout.all(), good,
                   {dq.view(), dk.view(), dv.view()}};
    edit(a);
    expect_error_everywhere("backward: " + name, message, {&dq, &dk, &dv}, [&] {
      dist::attention_split_kv_backward(a.q, a.k, a.v, a.out, a.lse, a.dout, a.params,
                                        MPI_COMM_WORLD, a.grads);
    });
  };
  expect("dout of the wrong shape on rank 1", "rank 1" + of + " rejected its arguments: dout:",
         [](BackwardArgs& a) {
           if (g_rank == 1) a.dout.layout.shape[2] -= 1;
         });
  expect("lse missing on the last rank",
         "rank " + last + of + " rejected its arguments: lse: is required", [&](BackwardArgs& a) {
           if (is_last) a.lse = {};
         });
  expect("bf16 q, k_shard, v_shard on the last rank",
         "q: dtype is 0 on rank 0 but 2 on rank " + last, [&](BackwardArgs& a) {
           if (!is_last) return;
           a.q = bf16.q.all();
           a.k = bf16.k.rows(keys.first, keys.count);
           a.v = bf16.v.rows(keys.first, keys.count);
         });
  Output dmask(DType::kF32, {c.B, 1, c.Lq, keys.count});
  expect("dmask asked of rank 0", "rank 0" + of + " rejected its arguments: dmask: not supported",
         [&](BackwardArgs& a) {
           if (g_rank == 0) a.grads.dmask = dmask.view();
         });
  // Found in step 2, where the shards' lengths are known.
  const std::vector<int64_t> long_lens = {c.Lk + 1, 3};
  expect("kv_lens beyond the whole key length",
         "kv_lens[0] = " + std::to_string(c.Lk + 1) + " is out of range", [&](BackwardArgs& a) {
           a.params.kv_lens = long_lens;
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
  add("diagonal_offset -5, causal bottom-right, kv_lens", [](Case& c) {
    c.diagonal_offset = -5, c.causal = true, c.align = CausalAlign::kBottomRight, c.kv_lens = {53, 20};
  });
  add("diagonal_offset 30, window (6, 1)", [](Case& c) { c.diagonal_offset = 30, c.window = {6, 1}; });
  add("float mask", [](Case& c) { c.mask = MaskKind::kFloat; });
  add("bool mask, causal", [](Case& c) { c.mask = MaskKind::kBool, c.causal = true; });
  add("GQA (Hq 6, Hkv 2), Dv 24", [](Case& c) { c.Hq = 6, c.Hkv = 2, c.Dv = 24; });
  add("bf16, bf16 out, causal", [](Case& c) {
    c.dtype = DType::kBF16, c.out_dtype = DType::kBF16, c.causal = true;
  });
  add("bf16, f32 out, softcap", [](Case& c) { c.dtype = DType::kBF16, c.softcap = 5.0f; });
  add("fewer keys than ranks", [](Case& c) { c.Lk = 2, c.causal = true, c.align = CausalAlign::kBottomRight; });

  for (size_t i = 0; i < cases.size(); ++i) run_case(cases[i], 1000 + i);
  for (size_t i = 0; i < cases.size(); ++i) run_backward_case(cases[i], 3000 + i);
  run_bad_inputs();
  run_backward_bad_inputs();
  // After the errors, the ranks must still be in step: good calls once more.
  run_case(cases[3], 2000);
  run_backward_case(cases[7], 4000);

  int failed = 0, passed = 0;
  MPI_Allreduce(&g_failed, &failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(&g_passed, &passed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (g_rank == 0) std::printf("split_kv on %d ranks: %d passed, %d failed\n", g_size, passed, failed);
  MPI_Finalize();
  return failed ? 1 : 0;
}
