// xattn::dist::ring_attention and ring_attention_backward, run by every rank under mpirun
// (-np 1, 2, 3, 4). Each case makes the same random sequence on every rank (one seed), gives each
// rank its rows under the layout (contiguous: uneven, rank 1 empty from 3 ranks on; zigzag:
// chunks r and 2P-1-r), and checks this rank's out, lse, dq, dk and dv against the same rows of
// the float64 oracle (src/reference) and of the single-process attention() /
// attention_backward() over the whole sequence. Bad-input cases check that every rank throws
// xattn::Error and writes nothing; a good call after them shows the ranks are still in step.
//
// No gtest: a failed check must not return early, or the ranks' collective calls would fall out
// of step. Failures are counted, summed over ranks, and rank 0 prints "N passed, M failed".

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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
using dist::RingLayout;

constexpr double kInf = std::numeric_limits<double>::infinity();

int g_rank = 0, g_size = 1, g_failed = 0, g_passed = 0;

void fail(const std::string& test, const std::string& why) {
  ++g_failed;
  std::fprintf(stderr, "[rank %d] FAILED %s: %s\n", g_rank, test.c_str(), why.c_str());
}

// The masks a case may pass: each rank gives its rows of the whole sequence's mask.
enum class MaskKind {
  kNone,
  kFloat,       // [B, Hq, L, L] additive, some -inf, one row all -inf
  kBool,        // [B, Hq, L, L] bool, one row all false
  kKeyPadding,  // [B, 1, 1, L] bool: the same on every rank (no rows to cut)
  kRows2D,      // [L, L] additive: broadcast over batches and heads
};

struct Case {
  std::string name;
  RingLayout layout = RingLayout::kContiguous;
  int64_t B = 2, Hq = 2, Hkv = 2, L = 53, D = 16, Dv = 16;  // zigzag cases use L = 48
  DType dtype = DType::kF32;
  DType out_dtype = DType::kF32;   // the forward's out
  DType grad_dtype = DType::kF32;  // dq, dk, dv
  bool causal = false;
  CausalAlign align = CausalAlign::kTopLeft;
  Window window;
  int64_t diagonal_offset = 0;
  float softcap = 0.0f;
  std::vector<int64_t> kv_lens, q_lens;  // the whole sequence's
  MaskKind mask = MaskKind::kNone;
};

// This rank's rows of the sequence: (first global row, count) pieces, in local order.
struct Piece {
  int64_t global, count;
};

std::vector<Piece> my_rows(RingLayout layout, int64_t L, int rank, int size) {
  if (layout == RingLayout::kZigzag) {
    const int64_t c = L / (2 * size);
    return {{rank * c, c}, {(2 * size - 1 - rank) * c, c}};
  }
  // Uneven, and rank 1 holds none when there are 3 ranks or more.
  std::vector<int64_t> weight(size);
  int64_t total = 0;
  for (int r = 0; r < size; ++r) total += weight[r] = (r == 1 && size > 2) ? 0 : r + 1;
  int64_t acc = 0, first = 0;
  for (int r = 0; r <= rank; ++r) {
    acc += weight[r];
    const int64_t end = r + 1 == size ? L : L * acc / total;
    if (r == rank) return {{first, end - first}};
    first = end;
  }
  return {};
}

int64_t count_rows(const std::vector<Piece>& pieces) {
  int64_t n = 0;
  for (const Piece& p : pieces) n += p.count;
  return n;
}

// Rows `pieces` of dim 2 of a row-major [d0, d1, L, d3] array, concatenated.
template <class T>
std::vector<T> gather(const std::vector<T>& full, int64_t d0d1, int64_t L, int64_t d3,
                      const std::vector<Piece>& pieces) {
  std::vector<T> out;
  for (int64_t ab = 0; ab < d0d1; ++ab)
    for (const Piece& p : pieces)
      out.insert(out.end(), full.begin() + (ab * L + p.global) * d3,
                 full.begin() + (ab * L + p.global + p.count) * d3);
  return out;
}

Layout dense(int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  return Layout::strided({d0, d1, d2, d3}, {d1 * d2 * d3, d2 * d3, d3, 1});
}

// A row-major [d0, d1, L, d3] tensor in f32, bf16 or f16, its values as the kernel reads them, and
// this rank's rows of it.
struct Tensor {
  DType dtype;
  int64_t d0, d1, L, d3;
  std::vector<float> f32;
  std::vector<uint16_t> half;  // bf16 or f16
  std::vector<double> values;
  std::vector<float> mine_f32;
  std::vector<uint16_t> mine_half;
  int64_t n = 0;

  Tensor(DType t, int64_t a, int64_t b, int64_t l, int64_t d, std::mt19937_64& rng)
      : dtype(t), d0(a), d1(b), L(l), d3(d) {
    std::normal_distribution<float> normal;
    for (int64_t i = 0; i < a * b * l * d; ++i) {
      float x = normal(rng);
      if (t == DType::kBF16) {
        half.push_back(float_to_bf16(x));
        x = bf16_to_float(half.back());
      } else if (t == DType::kF16) {
        half.push_back(float_to_f16(x));
        x = f16_to_float(half.back());
      } else {
        f32.push_back(x);
      }
      values.push_back(x);
    }
  }
  void take(const std::vector<Piece>& pieces) {
    n = count_rows(pieces);
    if (dtype != DType::kF32) mine_half = gather(half, d0 * d1, L, d3, pieces);
    else mine_f32 = gather(f32, d0 * d1, L, d3, pieces);
    mine_half.push_back(0), mine_f32.push_back(0);  // an empty view still needs non-null data
  }
  TensorView all() const {
    const void* p = dtype == DType::kF32 ? static_cast<const void*>(f32.data()) : half.data();
    return {p, dtype, dense(d0, d1, L, d3)};
  }
  TensorView mine() const {
    const void* p = dtype == DType::kF32 ? static_cast<const void*>(mine_f32.data()) : mine_half.data();
    return {p, dtype, dense(d0, d1, n, d3)};
  }
};

// A case's mask: the whole one (for attention() over the whole sequence and, expanded, the
// oracle) and this rank's rows of it.
struct Mask {
  MaskKind kind = MaskKind::kNone;
  std::vector<int64_t> shape;           // the whole mask's, rank 2 or 4
  std::vector<float> f32, mine_f32;     // additive kinds
  std::vector<uint8_t> bits, mine_bits; // bool kinds
  std::vector<int64_t> mine_shape;

  Mask(const Case& c, const std::vector<Piece>& rows, std::mt19937_64& rng) : kind(c.mask) {
    if (kind == MaskKind::kNone) return;
    const bool boolean = kind == MaskKind::kBool || kind == MaskKind::kKeyPadding;
    shape = kind == MaskKind::kRows2D      ? std::vector<int64_t>{c.L, c.L}
            : kind == MaskKind::kKeyPadding ? std::vector<int64_t>{c.B, 1, 1, c.L}
                                            : std::vector<int64_t>{c.B, c.Hq, c.L, c.L};
    int64_t size = 1;
    for (int64_t d : shape) size *= d;
    std::uniform_real_distribution<float> u(0, 1);
    const int64_t dead_row = 7;  // of the first [L, L] plane: it sees no key
    for (int64_t i = 0; i < size; ++i) {
      const bool dead = kind != MaskKind::kKeyPadding && i / c.L == dead_row;
      const bool keep = !dead && u(rng) < 0.8f;
      if (boolean) bits.push_back(kind == MaskKind::kKeyPadding ? (i % c.L) % 5 != 3 : keep);
      else f32.push_back(keep ? 2 * u(rng) - 1 : -std::numeric_limits<float>::infinity());
    }
    mine_shape = shape;
    if (kind == MaskKind::kKeyPadding) {
      mine_bits = bits;
    } else {  // this rank's rows: dim -2
      const int64_t planes = size / (c.L * c.L);
      if (boolean) mine_bits = gather(bits, planes, c.L, c.L, rows);
      else mine_f32 = gather(f32, planes, c.L, c.L, rows);
      mine_shape[mine_shape.size() - 2] = count_rows(rows);
    }
    mine_bits.push_back(0), mine_f32.push_back(0);  // non-null when empty
  }
  static TensorView view(const void* data, DType t, const std::vector<int64_t>& shape) {
    Layout l;
    l.rank = static_cast<int>(shape.size());
    for (int d = l.rank - 1, stride = 1; d >= 0; stride *= static_cast<int>(shape[d]), --d)
      l.shape[d] = shape[d], l.strides[d] = stride;
    return {data, t, l};
  }
  DType dtype() const { return f32.empty() ? DType::kBool : DType::kF32; }
  TensorView all() const {
    if (kind == MaskKind::kNone) return {};
    return view(f32.empty() ? static_cast<const void*>(bits.data()) : f32.data(), dtype(), shape);
  }
  TensorView mine() const {
    if (kind == MaskKind::kNone) return {};
    return view(f32.empty() ? static_cast<const void*>(mine_bits.data()) : mine_f32.data(), dtype(),
                mine_shape);
  }
  // Dense [B, Hq, L, L] for the oracle: additive, -inf where masked.
  std::vector<double> dense(const Case& c) const {
    if (kind == MaskKind::kNone) return {};
    std::vector<double> out;
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.Hq; ++h)
        for (int64_t i = 0; i < c.L; ++i)
          for (int64_t j = 0; j < c.L; ++j) {
            const int64_t at = kind == MaskKind::kRows2D      ? i * c.L + j
                               : kind == MaskKind::kKeyPadding ? b * c.L + j
                                                               : ((b * c.Hq + h) * c.L + i) * c.L + j;
            out.push_back(f32.empty() ? (bits[at] ? 0.0 : -kInf) : f32[at]);
          }
    return out;
  }
};

// An output buffer of some dtype, poisoned, read back as doubles.
struct Output {
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  Output(DType t, std::vector<int64_t> s) : dtype(t), shape(std::move(s)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    bytes.assign(std::max<int64_t>(n, 1) * dtype_size(t), 0xA5);  // non-null when empty
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
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<double> x(n);
    for (int64_t i = 0; i < n; ++i) {
      if (dtype == DType::kF32) {
        float f;
        std::memcpy(&f, bytes.data() + 4 * i, 4);
        x[i] = f;
      } else {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        x[i] = dtype == DType::kF16 ? f16_to_float(h) : bf16_to_float(h);
      }
    }
    return x;
  }
  bool untouched() const {
    return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0xA5; });
  }
};

// The sequence every rank makes alike from the case and its seed, and this rank's rows of it.
struct Problem {
  Case c;
  std::mt19937_64 rng;
  Tensor q, k, v, dout;
  std::vector<Piece> rows;
  Mask mask;
  Problem(const Case& cs, uint64_t seed)
      : c(cs), rng(seed), q(c.dtype, c.B, c.Hq, c.L, c.D, rng), k(c.dtype, c.B, c.Hkv, c.L, c.D, rng),
        v(c.dtype, c.B, c.Hkv, c.L, c.Dv, rng), dout(DType::kF32, c.B, c.Hq, c.L, c.Dv, rng),
        rows(my_rows(c.layout, c.L, g_rank, g_size)), mask(c, rows, rng) {
    for (Tensor* t : {&q, &k, &v, &dout}) t->take(rows);
  }
  int64_t n() const { return q.n; }
  AttentionParams params() const {
    AttentionParams p;
    p.causal = c.causal;
    p.align = c.align;
    p.window = c.window;
    p.diagonal_offset = c.diagonal_offset;
    p.softcap = c.softcap;
    p.kv_lens = c.kv_lens;
    p.q_lens = c.q_lens;
    p.mask = mask.mine();
    p.num_threads = 1;
    return p;
  }
  // The same for attention() over the whole sequence on one process.
  AttentionParams whole_params() const {
    AttentionParams p = params();
    p.mask = mask.all();
    return p;
  }
  reference::Problem oracle_problem() const {
    reference::Problem r;
    r.batch = c.B, r.heads_q = c.Hq, r.heads_kv = c.Hkv, r.q_len = c.L, r.kv_len = c.L;
    r.head_dim = c.D, r.value_dim = c.Dv;
    r.q = q.values, r.k = k.values, r.v = v.values;
    r.causal = c.causal, r.bottom_right = c.align == CausalAlign::kBottomRight;
    r.window_left = c.window.left, r.window_right = c.window.right;
    r.diagonal_offset = c.diagonal_offset;
    r.scale = 1.0 / std::sqrt(static_cast<double>(c.D));
    r.softcap = c.softcap;
    r.kv_lens = c.kv_lens, r.q_lens = c.q_lens;
    r.mask = mask.dense(c);
    return r;
  }
  // This rank's rows of a whole-sequence [B, H, L, W] result.
  std::vector<double> mine(const std::vector<double>& full, int64_t H, int64_t W) const {
    return gather(full, c.B * H, c.L, W, rows);
  }
};

// Worst |got - want| / (abs_tol[i] + rel_tol·|want|); <= 1 passes. Infinities must match.
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

void check(const std::string& test, const char* what, const std::vector<double>& got,
           const std::vector<double>& want, const std::function<double(size_t)>& abs_tol,
           double rel_tol) {
  if (got.size() != want.size()) {
    fail(test, std::string(what) + ": size " + std::to_string(got.size()) + " vs " + std::to_string(want.size()));
    return;
  }
  std::string where;
  const double r = worst_ratio(got, want, abs_tol, rel_tol, where);
  if (r > 1) fail(test, std::string(what) + ", error/tolerance " + std::to_string(r) + " at " + where);
}

double rounding_of(DType t) { return t == DType::kBF16 ? 0x1p-8 : t == DType::kF16 ? 0x1p-11 : 0; }

struct Grads {
  Output dq, dk, dv;
  Grads(const Case& c, int64_t n)
      : dq(c.grad_dtype, {c.B, c.Hq, n, c.D}), dk(c.grad_dtype, {c.B, c.Hkv, n, c.D}),
        dv(c.grad_dtype, {c.B, c.Hkv, n, c.Dv}) {}
  AttentionGradients views() { return {dq.view(), dk.view(), dv.view()}; }
};

void run_case(const Case& c, uint64_t seed) {
  const Problem p(c, seed);
  const int64_t n = p.n();
  const AttentionParams params = p.params();
  Output out(c.out_dtype, {c.B, c.Hq, n, c.Dv}), lse(DType::kF32, {c.B, c.Hq, n});
  // The backward takes an f32 out (a 16-bit one would round delta = rowsum(dout ⊙ out)).
  Output out32(DType::kF32, {c.B, c.Hq, n, c.Dv}), lse32(DType::kF32, {c.B, c.Hq, n});
  Grads grads(c, n), again(c, n);
  try {
    dist::ring_attention(p.q.mine(), p.k.mine(), p.v.mine(), params, MPI_COMM_WORLD, c.layout,
                         {out.view(), lse.view()});
    dist::ring_attention(p.q.mine(), p.k.mine(), p.v.mine(), params, MPI_COMM_WORLD, c.layout,
                         {out32.view(), lse32.view()});
    for (Grads* g : {&grads, &again})
      dist::ring_attention_backward(p.q.mine(), p.k.mine(), p.v.mine(), out32.view(), lse32.view(),
                                    p.dout.mine(), params, MPI_COMM_WORLD, c.layout, g->views());
  } catch (const Error& e) {
    fail(c.name, std::string("threw: ") + e.what());
    return;  // every rank threw alike (that is what the bad-input cases check)
  }

  // Forward, against the oracle (tests/cpp/oracle_util.cc's tolerance: f32 arithmetic,
  // 1e-5·max|V| for out plus a 16-bit out's rounding; 1e-5 for lse), and against attention()
  // over the whole sequence within the sum of both tolerances.
  const reference::Problem rp = p.oracle_problem();
  const reference::Result want = reference::attention(rp);
  double max_v = 0;
  for (double x : p.v.values) max_v = std::max(max_v, std::abs(x));
  const double out_round = rounding_of(c.out_dtype);
  const auto flat = [](double t) { return [t](size_t) { return t; }; };
  check(c.name, "out vs oracle", out.read(), p.mine(want.out, c.Hq, c.Dv), flat(1e-5 * max_v), out_round);
  check(c.name, "lse vs oracle", lse.read(), p.mine(want.lse, c.Hq, 1), flat(1e-5), 1e-5);
  Output whole(c.out_dtype, {c.B, c.Hq, c.L, c.Dv}), whole_lse(DType::kF32, {c.B, c.Hq, c.L});
  const AttentionParams whole_params = p.whole_params();
  attention(p.q.all(), p.k.all(), p.v.all(), whole_params, {whole.view(), whole_lse.view()});
  check(c.name, "out vs attention()", out.read(), p.mine(whole.read(), c.Hq, c.Dv),
        flat(2e-5 * max_v), 2 * out_round);
  check(c.name, "lse vs attention()", lse.read(), p.mine(whole_lse.read(), c.Hq, 1), flat(2e-5), 2e-5);

  // Backward, against the oracle's gradients with tests/cpp/backward_test.cc's tolerance:
  // (1e-5 + 2^-21·max|lse|) times the sum of the terms' sizes, plus a 16-bit gradient's
  // rounding; against attention_backward() over the whole sequence within twice that.
  const reference::Gradients gw = reference::attention_backward(rp, p.dout.values);
  double max_lse = 0;
  for (double l : want.lse)
    if (std::isfinite(l)) max_lse = std::max(max_lse, std::abs(l));
  const double rel = 1e-5 + 0x1p-21 * max_lse, grad_round = rounding_of(c.grad_dtype);
  const std::vector<double> dq_scale = p.mine(gw.dq_scale, c.Hq, c.D),
                            dk_scale = p.mine(gw.dk_scale, c.Hkv, c.D),
                            dv_scale = p.mine(gw.dv_scale, c.Hkv, c.Dv);
  const auto scaled = [rel](const std::vector<double>& s, double times) {
    return [&s, rel, times](size_t i) { return times * rel * s[i]; };
  };
  check(c.name, "dq vs oracle", grads.dq.read(), p.mine(gw.dq, c.Hq, c.D), scaled(dq_scale, 1), grad_round);
  check(c.name, "dk vs oracle", grads.dk.read(), p.mine(gw.dk, c.Hkv, c.D), scaled(dk_scale, 1), grad_round);
  check(c.name, "dv vs oracle", grads.dv.read(), p.mine(gw.dv, c.Hkv, c.Dv), scaled(dv_scale, 1), grad_round);
  Output wout(DType::kF32, {c.B, c.Hq, c.L, c.Dv}), wlse(DType::kF32, {c.B, c.Hq, c.L});
  attention(p.q.all(), p.k.all(), p.v.all(), whole_params, {wout.view(), wlse.view()});
  Output wdq(c.grad_dtype, {c.B, c.Hq, c.L, c.D}), wdk(c.grad_dtype, {c.B, c.Hkv, c.L, c.D}),
      wdv(c.grad_dtype, {c.B, c.Hkv, c.L, c.Dv});
  attention_backward(p.q.all(), p.k.all(), p.v.all(), wout.view(), wlse.view(), p.dout.all(),
                     whole_params, {wdq.view(), wdk.view(), wdv.view()});
  check(c.name, "dq vs attention_backward()", grads.dq.read(), p.mine(wdq.read(), c.Hq, c.D),
        scaled(dq_scale, 2), 2 * grad_round);
  check(c.name, "dk vs attention_backward()", grads.dk.read(), p.mine(wdk.read(), c.Hkv, c.D),
        scaled(dk_scale, 2), 2 * grad_round);
  check(c.name, "dv vs attention_backward()", grads.dv.read(), p.mine(wdv.read(), c.Hkv, c.Dv),
        scaled(dv_scale, 2), 2 * grad_round);

  // The same inputs give the same bits.
  if (grads.dq.bytes != again.dq.bytes || grads.dk.bytes != again.dk.bytes ||
      grads.dv.bytes != again.dv.bytes)
    fail(c.name, "two backward calls gave different bits");
  ++g_passed;
}

// A call that must throw on every rank, and write nothing. `expect` must be in the message.
void expect_error_everywhere(const std::string& name, const std::string& expect,
                             const std::function<void(Output&, Output&)>& call) {
  Output a(DType::kF32, {2, 2, 64, 16}), b(DType::kF32, {2, 2, 64});
  try {
    call(a, b);
    fail(name, "no error");
    return;
  } catch (const Error& e) {
    if (std::string(e.what()).find(expect) == std::string::npos)
      fail(name, "message \"" + std::string(e.what()) + "\" lacks \"" + expect + "\"");
    else if (g_rank == 0)
      std::printf("  %s: %s\n", name.c_str(), e.what());
  }
  if (!a.untouched() || !b.untouched()) fail(name, "outputs were written");
  ++g_passed;
}

// `out` and `lse` views of the first rows of the poisoned buffers of expect_error_everywhere.
MutableTensorView first_rows(Output& o, int64_t n, int64_t width) {
  MutableTensorView v = o.view();
  if (v.layout.rank == 4) v.layout = dense(2, 2, n, width);
  else v.layout = Layout::strided({2, 2, n}, {2 * n, n, 1});
  return v;
}

// The first `rows` rows of a rank-4 view.
TensorView head(TensorView t, int64_t rows) {
  t.layout.shape[2] = rows;
  return t;
}

void run_bad_inputs() {
  Case c;
  c.layout = RingLayout::kZigzag, c.L = 48, c.causal = true;
  const Problem p(c, 99);
  Case uneven_case = c;
  uneven_case.layout = RingLayout::kContiguous, uneven_case.L = 53;
  const Problem uneven(uneven_case, 98);
  const int64_t n = p.n();
  const int last = g_size - 1;
  const std::string of = " of " + std::to_string(g_size), at_last = std::to_string(last);
  const AttentionParams good = p.params();
  std::mt19937_64 rng(5);
  Tensor q8(DType::kF32, c.B, c.Hq, c.L, 8, rng), k8(DType::kF32, c.B, c.Hkv, c.L, 8, rng);
  q8.take(p.rows), k8.take(p.rows);
  // ring_attention over the first `rows` rows of (q, k, p.v), outputs in the poisoned buffers.
  auto forward = [&](const TensorView& q, const TensorView& k, const TensorView& v,
                     const AttentionParams& params, RingLayout layout, Output& o, Output& l,
                     MPI_Comm comm = MPI_COMM_WORLD) {
    const int64_t rows = q.size(2);
    dist::ring_attention(q, k, v, params, comm, layout,
                         {first_rows(o, rows, c.Dv), first_rows(l, rows, 1)});
  };
  const TensorView q = p.q.mine(), k = p.k.mine(), v = p.v.mine();
  const bool odd = g_rank == last;

  expect_error_everywhere("q and k head dim 8 on the last rank",
                          "q: D (head dim) is 16 on rank 0 but 8 on rank " + at_last,
                          [&](Output& o, Output& l) {
                            forward(odd ? q8.mine() : q, odd ? k8.mine() : k, v, good, c.layout, o, l);
                          });
  expect_error_everywhere("k head dim differs from q's on the last rank",
                          "rank " + at_last + of + " rejected its arguments: k:",
                          [&](Output& o, Output& l) {
                            forward(q, odd ? k8.mine() : k, v, good, c.layout, o, l);
                          });
  expect_error_everywhere("zigzag with uneven rows",
                          "the zigzag layout needs the same number of rows on every rank",
                          [&](Output& o, Output& l) {
                            forward(uneven.q.mine(), uneven.k.mine(), uneven.v.mine(), good,
                                    RingLayout::kZigzag, o, l);
                          });
  expect_error_everywhere("zigzag with an odd number of rows", "even number of rows; each holds 5",
                          [&](Output& o, Output& l) {
                            forward(head(q, 5), head(k, 5), head(v, 5), good, c.layout, o, l);
                          });
  expect_error_everywhere("k rows differ from q rows on the last rank",
                          "rank " + at_last + of + " rejected its arguments: k: dim 2 (rows)",
                          [&](Output& o, Output& l) {
                            const int64_t rows = odd ? n - 2 : n;
                            forward(q, head(k, rows), head(v, rows), good, c.layout, o, l);
                          });
  expect_error_everywhere("a bad window on rank 0", "rank 0" + of + " rejected its arguments: window:",
                          [&](Output& o, Output& l) {
                            AttentionParams bad = good;
                            if (g_rank == 0) bad.window = {-5, 0};
                            forward(q, k, v, bad, c.layout, o, l);
                          });
  expect_error_everywhere("causal off on the last rank",
                          "causal: value is 1 on rank 0 but 0 on rank " + at_last,
                          [&](Output& o, Output& l) {
                            AttentionParams bad = good;
                            bad.causal = !odd;
                            forward(q, k, v, bad, c.layout, o, l);
                          });
  expect_error_everywhere("layout differs on the last rank",
                          "layout: value is 1 on rank 0 but 0 on rank " + at_last,
                          [&](Output& o, Output& l) {
                            forward(q, k, v, good, odd ? RingLayout::kContiguous : c.layout, o, l);
                          });
  const std::vector<uint8_t> mask_bits(n * c.L, 1);
  expect_error_everywhere("a mask of this rank's keys only on rank 0",
                          "rank 0" + of + " rejected its arguments: mask: expected a shape that "
                          "broadcasts to [B, Hq, n, L] = [2, 2, " + std::to_string(n) + ", 48]",
                          [&](Output& o, Output& l) {
                            AttentionParams bad = good;
                            const int64_t keys = g_rank == 0 ? n : c.L;
                            bad.mask = {mask_bits.data(), DType::kBool, Layout::contiguous({n, keys})};
                            forward(q, k, v, bad, c.layout, o, l);
                          });
  expect_error_everywhere("a mask on rank 0 only", "mask: presence is 1 on rank 0 but 0 on rank 1",
                          [&](Output& o, Output& l) {
                            AttentionParams bad = good;
                            if (g_rank == 0)
                              bad.mask = {mask_bits.data(), DType::kBool, Layout::contiguous({n, c.L})};
                            forward(q, k, v, bad, c.layout, o, l);
                          });
  const std::vector<int64_t> too_long = {c.L + 1, c.L};
  expect_error_everywhere("kv_lens beyond the sequence", "kv_lens[0] = 49 is out of range",
                          [&](Output& o, Output& l) {
                            AttentionParams bad = good;
                            bad.kv_lens = too_long;
                            forward(q, k, v, bad, c.layout, o, l);
                          });
  expect_error_everywhere("MPI_COMM_NULL", "comm: is MPI_COMM_NULL", [&](Output& o, Output& l) {
    forward(q, k, v, good, c.layout, o, l, MPI_COMM_NULL);
  });

  // The backward: a good forward's out and lse, then bad gradients or lengths on one rank.
  Output out(DType::kF32, {c.B, c.Hq, n, c.Dv}), lse(DType::kF32, {c.B, c.Hq, n});
  dist::ring_attention(q, k, v, good, MPI_COMM_WORLD, c.layout, {out.view(), lse.view()});
  Output dk(DType::kF32, {c.B, c.Hkv, n, c.D}), dv(DType::kF32, {c.B, c.Hkv, n, c.Dv});
  auto backward = [&](Output& o, const AttentionParams& params, int64_t dq_rows) {
    dist::ring_attention_backward(q, k, v, out.view(), lse.view(), p.dout.mine(), params,
                                  MPI_COMM_WORLD, c.layout,
                                  {first_rows(o, dq_rows, c.D), dk.view(), dv.view()});
  };
  expect_error_everywhere("backward: dq of the wrong shape on rank 1",
                          "rank 1" + of + " rejected its arguments: dq:", [&](Output& o, Output&) {
                            backward(o, good, g_rank == 1 ? n + 1 : n);
                          });
  const std::vector<int64_t> lens = {c.L, c.L - 1};
  expect_error_everywhere("backward: kv_lens on the last rank only",
                          "kv_lens: length is 0 on rank 0 but 2 on rank " + at_last,
                          [&](Output& o, Output&) {
                            AttentionParams bad = good;
                            if (odd) bad.kv_lens = lens;
                            backward(o, bad, n);
                          });
  const std::vector<int64_t> other_lens = {c.L, c.L - 2};
  expect_error_everywhere("backward: q_lens differ on the last rank",
                          "q_lens: list differs between rank 0 and rank " + at_last,
                          [&](Output& o, Output&) {
                            AttentionParams bad = good;
                            bad.q_lens = odd ? other_lens : lens;
                            backward(o, bad, n);
                          });
  expect_error_everywhere("backward: softcap differs on the last rank",
                          "softcap: value's bits", [&](Output& o, Output&) {
                            AttentionParams bad = good;
                            if (odd) bad.softcap = 3.0f;
                            backward(o, bad, n);
                          });
}

// Last of all: a rank that never calls, and ranks that pass different communicators. The ranks
// that wait throw after XATTN_DIST_TIMEOUT seconds instead of hanging. Each case on a
// communicator of its own, since the unfinished check stays on it.
void run_missing_ranks() {
  setenv("XATTN_DIST_TIMEOUT", "1", 1);
  Case c;
  c.layout = RingLayout::kZigzag, c.L = 48, c.causal = true;
  const Problem p(c, 7);
  const int64_t n = p.n();
  const std::string expect = "comm: not all of its ";
  MPI_Comm missing, odd, even;
  MPI_Comm_dup(MPI_COMM_WORLD, &missing);
  MPI_Comm_dup(MPI_COMM_WORLD, &odd);
  MPI_Comm_dup(MPI_COMM_WORLD, &even);
  auto call = [&](MPI_Comm comm, Output& o, Output& l) {
    dist::ring_attention(p.q.mine(), p.k.mine(), p.v.mine(), p.params(), comm, c.layout,
                         {first_rows(o, n, c.Dv), first_rows(l, n, 1)});
  };
  if (g_rank != g_size - 1)
    expect_error_everywhere("the last rank does not call", expect + std::to_string(g_size) + " ranks",
                            [&](Output& o, Output& l) { call(missing, o, l); });
  else
    ++g_passed;  // it has nothing to check, and the counts must stay alike
  expect_error_everywhere("ranks pass different communicators", expect,
                          [&](Output& o, Output& l) { call(g_rank % 2 ? odd : even, o, l); });
  // The communicators hold unfinished collectives: they are left as they are, not freed.
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
    if (c.layout == RingLayout::kZigzag && c.L == 53) c.L = 48;  // a multiple of 2P, P = 2, 3, 4
    cases.push_back(c);
  };
  const RingLayout zigzag = RingLayout::kZigzag;
  add("no mask, contiguous", [](Case&) {});
  add("no mask, zigzag", [&](Case& c) { c.layout = zigzag; });
  add("causal, contiguous", [](Case& c) { c.causal = true; });
  add("causal, zigzag", [&](Case& c) { c.causal = true, c.layout = zigzag; });
  add("causal bottom-right, zigzag", [&](Case& c) {
    c.causal = true, c.align = CausalAlign::kBottomRight, c.layout = zigzag;
  });
  add("window (5, 2), contiguous", [](Case& c) { c.window = {5, 2}; });
  add("window (6, 0) causal, zigzag", [&](Case& c) { c.window = {6, 0}, c.causal = true, c.layout = zigzag; });
  add("causal, diagonal_offset -3, contiguous", [](Case& c) { c.causal = true, c.diagonal_offset = -3; });
  add("GQA (Hq 6, Hkv 2), Dv 24, causal, zigzag", [&](Case& c) {
    c.Hq = 6, c.Hkv = 2, c.Dv = 24, c.causal = true, c.layout = zigzag;
  });
  add("softcap 5, zigzag", [&](Case& c) { c.softcap = 5.0f, c.layout = zigzag; });
  add("bf16, bf16 gradients, causal, zigzag", [&](Case& c) {
    c.dtype = DType::kBF16, c.grad_dtype = DType::kBF16, c.causal = true, c.layout = zigzag;
  });
  add("bf16, bf16 out, causal, contiguous", [](Case& c) {
    c.dtype = DType::kBF16, c.out_dtype = DType::kBF16, c.causal = true;
  });
  add("f16, f16 out and gradients, window (4, 4), zigzag", [&](Case& c) {
    c.dtype = c.out_dtype = c.grad_dtype = DType::kF16, c.window = {4, 4}, c.layout = zigzag;
  });
  // Long enough that each rank's rows are cut into pieces between which transfers progress.
  add("1200 rows, causal, contiguous", [](Case& c) { c.B = 1, c.Hq = c.Hkv = 1, c.L = 1200, c.causal = true; });
  add("1200 rows, window (300, 0), zigzag", [&](Case& c) {
    c.L = 1200, c.B = 1, c.Hq = c.Hkv = 1, c.window = {300, 0}, c.layout = zigzag;
  });

  // Masks and lengths: each rank passes its rows of the whole mask, global lengths.
  add("float mask, contiguous", [](Case& c) { c.mask = MaskKind::kFloat; });
  add("bool mask, causal, zigzag", [&](Case& c) { c.mask = MaskKind::kBool, c.causal = true, c.layout = zigzag; });
  add("key-padding mask [B, 1, 1, L], zigzag", [&](Case& c) { c.mask = MaskKind::kKeyPadding, c.layout = zigzag; });
  add("2-D mask [L, L], GQA 4/2, window (9, 3), contiguous", [](Case& c) {
    c.mask = MaskKind::kRows2D, c.Hq = 4, c.window = {9, 3};
  });
  add("kv_lens {L - 5, 0}, zigzag", [&](Case& c) { c.kv_lens = {43, 0}, c.layout = zigzag; });
  add("q_lens {30, L}, causal, contiguous", [](Case& c) { c.q_lens = {30, 53}, c.causal = true; });
  add("kv_lens and q_lens, causal bottom-right (shifts 10 and -9), zigzag", [&](Case& c) {
    c.kv_lens = {40, 39}, c.q_lens = {30, 48}, c.causal = true;
    c.align = CausalAlign::kBottomRight, c.layout = zigzag;
  });
  add("kv_lens, q_lens, window (7, 1) bottom-right, float mask, bf16, contiguous", [](Case& c) {
    c.kv_lens = {50, 23}, c.q_lens = {53, 41}, c.window = {7, 1}, c.align = CausalAlign::kBottomRight;
    c.mask = MaskKind::kFloat, c.dtype = DType::kBF16;
  });
  add("1200 rows, kv_lens, bool mask, causal, zigzag", [&](Case& c) {
    c.L = 1200, c.B = 2, c.Hq = c.Hkv = 1, c.kv_lens = {1100, 700}, c.mask = MaskKind::kBool;
    c.causal = true, c.layout = zigzag;
  });

  for (size_t i = 0; i < cases.size(); ++i) run_case(cases[i], 1000 + i);
  if (g_size > 1) {  // the bad-input cases make one rank differ from the others
    run_bad_inputs();
    // After the errors, the ranks must still be in step: a good call once more.
    run_case(cases[3], 2000);
    run_missing_ranks();
  }

  int failed = 0, passed = 0;
  MPI_Allreduce(&g_failed, &failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(&g_passed, &passed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (g_rank == 0)
    std::printf("ring_attention on %d ranks: %d passed, %d failed\n", g_size, passed, failed);
  MPI_Finalize();
  return failed ? 1 : 0;
}
