#include "core/validate.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/parallel.h"
#include "xattn/error.h"

namespace xattn::core {
namespace {

template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw Error(os.str());
}

std::string shape_string(const TensorView& t) {
  std::ostringstream os;
  if (t.rank() < 0 || t.rank() > kMaxRank) {  // the view holds no more sizes than kMaxRank
    os << "of rank " << t.rank();
    return os.str();
  }
  os << "[";
  for (int i = 0; i < t.rank(); ++i) os << (i ? ", " : "") << t.size(i);
  os << "]";
  return os.str();
}

std::string dims_string(std::span<const char* const> dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::string(dims[i]);
  return s + "]";
}

bool is_float(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

// |a·b| and a+b without signed overflow; 2^62 leaves headroom for byte offsets.
constexpr int64_t kMaxExtent = int64_t{1} << 62;

int64_t checked_mul(const char* arg, int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r) || r > kMaxExtent || r < -kMaxExtent)
    fail(arg, ": sizes and strides overflow 64-bit index arithmetic");
  return r;
}

int64_t checked_add(const char* arg, int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r) || r > kMaxExtent || r < -kMaxExtent)
    fail(arg, ": sizes and strides overflow 64-bit index arithmetic");
  return r;
}

// a·b and a+b for sizes in bytes, saturating at INT64_MAX (inputs are >= 0).
int64_t sat_mul(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}
int64_t sat_add(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

std::string bytes_text(int64_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double x = static_cast<double>(bytes);
  int u = 0;
  while (x >= 1024 && u < 6) x /= 1024, ++u;
  std::ostringstream os;
  os.precision(u ? 3 : 20);
  os << x << " " << units[u];
  return os.str();
}

void check_dtype_float(const char* arg, DType t) {
  if (!is_float(t)) fail(arg, ": dtype must be float32, float16 or bfloat16, got ", dtype_name(t));
}

// Output dtype: f32, or the inputs' dtype.
void check_output_dtype(const char* arg, DType t, DType input) {
  if (t != DType::kF32 && t != input)
    fail(arg, ": dtype must be float32 or the inputs' dtype ", dtype_name(input), ", got ",
         dtype_name(t));
}

void check_shape(const char* arg, const TensorView& t, std::initializer_list<int64_t> expected_list,
                 std::span<const char* const> dims) {
  const int64_t* expected = expected_list.begin();
  if (t.rank() != static_cast<int>(expected_list.size()))
    fail(arg, ": expected shape ", dims_string(dims), " of rank ", expected_list.size(),
         ", got shape ", shape_string(t));
  for (int i = 0; i < t.rank(); ++i)
    if (t.size(i) != expected[i])
      fail(arg, ": dim ", i, " (", dims[i], ") must be ", expected[i], ", got ", t.size(i),
           " (shape ", shape_string(t), ")");
}

bool is_empty(const TensorView& t) {
  for (int i = 0; i < t.rank(); ++i)
    if (t.size(i) == 0) return true;
  return false;
}

// Outputs must not write one element twice. A stride of 0 on a dimension longer than 1 is the
// common mistake; more generally, with the dims sorted by |stride|, each must step past all that
// the smaller ones span (true of every permuted, sliced or padded layout, and a sufficient test
// for no overlap: the exact one is a knapsack problem).
void check_writable(const char* arg, const MutableTensorView& t) {
  if (is_empty(t)) return;  // (numpy gives empty arrays zero strides)
  for (int i = 0; i < t.layout.rank; ++i)
    if (t.layout.shape[i] > 1 && t.layout.strides[i] == 0)
      fail(arg, ": dim ", i, " has stride 0, so several results would land on one element");
  std::vector<std::pair<int64_t, int>> dims;  // (|stride|, dim) of the dims longer than 1
  for (int i = 0; i < t.layout.rank; ++i)
    if (t.layout.shape[i] > 1) dims.push_back({std::abs(t.layout.strides[i]), i});
  std::sort(dims.begin(), dims.end());
  int64_t span = 0;  // how far the smaller-stride dims reach (no overflow: check_view)
  for (const auto& [stride, i] : dims) {
    if (stride <= span)
      fail(arg, ": dim ", i, " has stride ", t.layout.strides[i],
           ", which steps into elements the smaller strides already reach: outputs must not "
           "overlap themselves (several results would land on one element)");
    span += (t.layout.shape[i] - 1) * stride;
  }
}

// The bytes a view can touch, [lo, hi); empty for a view with no elements.
struct Span {
  uintptr_t lo = 0, hi = 0;
};

Span span_of(const TensorView& t) {
  if (!t.present() || is_empty(t)) return {};
  int64_t lo = 0, hi = 0;  // element offsets; bounded by check_view
  for (int i = 0; i < t.rank(); ++i) {
    const int64_t reach = (t.size(i) - 1) * t.stride(i);
    (reach < 0 ? lo : hi) += reach;
  }
  const auto base = reinterpret_cast<uintptr_t>(t.data);
  const int64_t size = dtype_size(t.dtype);
  return {base + static_cast<uintptr_t>(lo * size), base + static_cast<uintptr_t>((hi + 1) * size)};
}

struct Named {
  const char* name;
  TensorView view;
};

// An output is computed from the inputs while it is written, by several threads: it must not
// share memory with any of them, nor with another output. Address ranges are compared, so views
// that interleave without sharing an element are refused too; separate buffers never are.
void check_no_overlap(std::initializer_list<Named> outputs, std::initializer_list<Named> inputs) {
  for (auto o = outputs.begin(); o != outputs.end(); ++o) {
    const Span so = span_of(o->view);
    if (so.lo == so.hi) continue;
    auto check = [&](const Named& other, const char* role) {
      const Span s = span_of(other.view);
      if (s.lo != s.hi && so.lo < s.hi && s.lo < so.hi)
        fail(o->name, ": overlaps ", role, other.name, " in memory; outputs must not share memory "
             "with the inputs or with each other");
    };
    for (const Named& in : inputs) check(in, "the input ");
    for (auto p = outputs.begin(); p != o; ++p) check(*p, "the output ");
  }
}

Operand operand(const TensorView& t, int64_t sb, int64_t sh, int64_t sl, int64_t sd) {
  return {t.data, t.dtype, {sb, sh, sl, sd}};
}

// [B, H, L, D] views map dim-for-dim onto an operand.
Operand operand4(const TensorView& t) {
  return operand(t, t.stride(0), t.stride(1), t.stride(2), t.stride(3));
}

void check_lengths(const char* arg, std::span<const int64_t> lens, int64_t batch, int64_t limit,
                   const char* limit_name) {
  if (lens.empty()) return;
  if (static_cast<int64_t>(lens.size()) != batch)
    fail(arg, ": expected ", batch, " entries (one per batch), got ", lens.size());
  for (size_t b = 0; b < lens.size(); ++b)
    if (lens[b] < 0 || lens[b] > limit)
      fail(arg, "[", b, "] = ", lens[b], " is out of range [0, ", limit_name, " = ", limit, "]");
}

struct Extents {
  int64_t batch, heads_q, rows, cols;  // what a dense mask broadcasts to
};

// Right-aligns the mask's dims onto [B, Hq, rows, cols]; size-1 dims broadcast (stride 0).
Operand mask_operand(const TensorView& m, const Extents& e) {
  if (!m.present()) return {};
  static constexpr const char* kDims[] = {"B", "Hq", "Lq", "Lk"};
  const int64_t target[4] = {e.batch, e.heads_q, e.rows, e.cols};
  if (m.rank() < 1 || m.rank() > 4)
    fail("mask: expected rank 1 to 4 broadcasting to [B, Hq, Lq, Lk] = [", e.batch, ", ",
         e.heads_q, ", ", e.rows, ", ", e.cols, "], got shape ", shape_string(m));
  if (m.dtype != DType::kBool && !is_float(m.dtype))
    fail("mask: dtype must be bool, float32, float16 or bfloat16, got ", dtype_name(m.dtype));
  const char* dims[4] = {"d0", "d1", "d2", "d3"};
  check_view("mask", m, std::span(dims, m.rank()));
  Operand op{m.data, m.dtype, {0, 0, 0, 0}};
  const int offset = 4 - m.rank();
  for (int i = 0; i < m.rank(); ++i) {
    const int t = i + offset;
    if (m.size(i) == target[t]) {
      op.stride[t] = target[t] == 1 ? 0 : m.stride(i);
    } else if (m.size(i) != 1) {
      fail("mask: dim ", i, " has size ", m.size(i), ", which does not broadcast to ", kDims[t],
           " = ", target[t], " (expected 1 or ", target[t], "; mask shape ", shape_string(m), ")");
    }
  }
  return op;
}

// AttentionOutputs::accumulate: out and lse are read as the result over other keys.
void check_accumulate(Problem& p, const AttentionOutputs& outputs) {
  if (!outputs.accumulate) return;
  if (!outputs.lse.present())
    fail("lse: is required with accumulate (the log-sum-exp of the result that out holds)");
  if (outputs.weights.present())
    fail("weights: cannot be computed with accumulate (they would cover this call's keys only)");
  p.accumulate = true;
}

void fill_common_params(Problem& p, const AttentionParams& params) {
  if (params.scale && !std::isfinite(*params.scale))
    fail("scale: must be finite, got ", *params.scale);
  if (!std::isfinite(params.softcap) || params.softcap < 0)
    fail("softcap: must be >= 0 and finite (0 disables it), got ", params.softcap);
  // The kernels multiply by 1/softcap: it must be finite, or a zero score becomes 0·inf = NaN.
  constexpr float kMinSoftcap = 1.0f / std::numeric_limits<float>::max();
  if (params.softcap > 0 && params.softcap < kMinSoftcap)
    fail("softcap: must be 0 (off) or at least ", kMinSoftcap,
         " (so that 1/softcap is finite), got ", params.softcap);
  if (params.window.left < -1 || params.window.right < -1)
    fail("window: (left, right) must each be >= 0, or -1 for unbounded, got (",
         params.window.left, ", ", params.window.right, ")");
  if (params.num_threads < 0 || params.num_threads > kMaxThreads)
    fail("num_threads: must be in [0, ", kMaxThreads, "] (0: default), got ", params.num_threads);
  p.scale = params.scale ? *params.scale : 1.0f / std::sqrt(static_cast<float>(p.head_dim));
  p.softcap = params.softcap;
  p.causal = params.causal;
  p.bottom_right = params.align == CausalAlign::kBottomRight;
  if (params.align != CausalAlign::kTopLeft && params.align != CausalAlign::kBottomRight)
    fail("align: must be top_left or bottom_right");
  // |p - j| <= Lq + Lk + |diagonal_offset| for every diagonal p and key j, so a wider window is
  // unbounded; clamping keeps p - left and p + right + 1 from overflowing (a window of
  // INT64_MAX is legal input). The bound on the offset keeps that sum itself far from overflow.
  constexpr int64_t kMaxReach = int64_t{1} << 61;
  const int64_t offset = params.diagonal_offset;
  if (offset < -kMaxReach || offset > kMaxReach)
    fail("diagonal_offset: |diagonal_offset| must be at most 2^61 = ", kMaxReach, ", got ", offset);
  const int64_t widest = sat_add(sat_add(p.max_q_rows, p.max_kv_len), offset < 0 ? -offset : offset);
  if (offset != 0 && widest > kMaxReach)
    fail("diagonal_offset: |diagonal_offset| + Lq + Lk must be at most 2^61 = ", kMaxReach,
         ", got ", offset < 0 ? -offset : offset, " + ", p.max_q_rows, " + ", p.max_kv_len);
  p.diagonal_offset = offset;
  p.window_left = std::min(params.window.left, widest);
  p.window_right = std::min(params.window.right, widest);
  p.num_threads = params.num_threads;
  p.bf16_probabilities = params.bf16_probabilities;
}

void check_inputs_dtypes(const TensorView& q, const TensorView& k, const TensorView& v) {
  check_dtype_float("q", q.dtype);
  if (k.dtype != q.dtype) fail("k: dtype must match q's ", dtype_name(q.dtype), ", got ",
                               dtype_name(k.dtype));
  if (v.dtype != q.dtype) fail("v: dtype must match q's ", dtype_name(q.dtype), ", got ",
                               dtype_name(v.dtype));
}

void check_heads(int64_t heads_q, int64_t heads_kv) {
  // Zero query heads are a multiple of any kv head count (an empty problem), and the only one
  // of zero kv heads.
  if (heads_kv == 0 ? heads_q != 0 : heads_q % heads_kv != 0)
    fail("q: Hq = ", heads_q, " must be a multiple of k's Hkv = ", heads_kv,
         " (grouped-query attention shares each kv head among Hq/Hkv query heads)");
}

}  // namespace

void check_output(const char* arg, const MutableTensorView& t) { check_writable(arg, t); }

bool share_memory(const TensorView& a, const TensorView& b) {
  const Span sa = span_of(a), sb = span_of(b);
  return sa.lo != sa.hi && sb.lo != sb.hi && sa.lo < sb.hi && sb.lo < sa.hi;
}

int64_t physical_memory_bytes() {
  static const int64_t bytes = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? sat_mul(pages, page) : INT64_MAX;
  }();
  return bytes;
}

void check_memory(const char* what, int64_t count, int64_t bytes_each) {
  const int64_t bytes = count < 0 ? INT64_MAX : sat_mul(count, bytes_each);
  if (bytes > physical_memory_bytes())
    fail(what, ": needs ", bytes == INT64_MAX ? "more than 8 EiB" : bytes_text(bytes),
         ", more than this machine's ", bytes_text(physical_memory_bytes()), " of memory");
}

void check_view(const char* arg, const TensorView& t, std::span<const char* const> dims,
                bool last_positive) {
  if (t.rank() != static_cast<int>(dims.size()))
    fail(arg, ": expected shape ", dims_string(dims), " of rank ", dims.size(), ", got shape ",
         shape_string(t));
  if (t.data == nullptr) fail(arg, ": data is null");
  int64_t numel = 1;
  for (int i = 0; i < t.rank(); ++i) {
    const bool feature = last_positive && i == t.rank() - 1;
    if (t.size(i) < (feature ? 1 : 0))
      fail(arg, ": dim ", i, " (", dims[i], ") must be ", feature ? "positive" : "non-negative",
           ", got ", t.size(i), " (shape ", shape_string(t), ")");
    // Bounded even where strides are 0: loops and buffers follow the sizes, not the memory.
    numel = checked_mul(arg, numel, std::max<int64_t>(t.size(i), 1));
  }
  if (is_empty(t)) return;  // addresses nothing
  int64_t extent = 0;
  for (int i = 0; i < t.rank(); ++i) {
    // |INT64_MIN| does not fit: saturate (checked_mul refuses it unless the dim has size 1).
    const int64_t stride = t.stride(i) == std::numeric_limits<int64_t>::min()
                               ? std::numeric_limits<int64_t>::max()
                               : std::abs(t.stride(i));
    extent = checked_add(arg, extent, checked_mul(arg, t.size(i) - 1, stride));
  }
  checked_mul(arg, extent + 1, dtype_size(t.dtype));
}

namespace {

// An upper bound on the working memory a call allocates: bookkeeping per sequence and kv head
// (work items, key blocks), statistics per query row (the forward's m and l for the weights, the
// backward's delta), and each thread's scratch: a few hundred rows of D and Dv floats, plus in
// the backward one kv head's dq rows and a copy of the mask gradient. Kept in step with the
// kernels by hand; it need only be right to within a small factor, as it only refuses requests
// that could never fit (which would otherwise end in std::bad_alloc, or with overcommit in the
// OOM killer once the pages are touched).
int64_t workspace_bytes(const Problem& p, bool backward, int64_t dmask_copy) {
  const int64_t threads = resolve_threads(p.num_threads);
  int64_t per_thread = sat_mul(2048, p.head_dim + p.value_dim + 64);
  if (backward) {
    const int64_t head_rows = sat_mul(p.max_q_rows, p.group_size());
    per_thread = sat_add(per_thread, sat_mul(head_rows, 4 * (p.head_dim + 16)));
    per_thread = sat_add(per_thread, sat_mul(dmask_copy, 4));
  }
  const int64_t heads = sat_mul(p.batch, p.heads_kv + 1);
  int64_t bytes = sat_mul(heads, 64);
  bytes = sat_add(bytes, sat_mul(sat_mul(sat_mul(p.batch, p.heads_q), p.max_q_rows), 16));
  bytes = sat_add(bytes, sat_mul(heads, p.max_kv_len));
  // A row of zeros for the rows past q_lens: Dv values, and a weights row.
  const int64_t zeros = sat_add(p.value_dim, p.weights.present() ? p.weights_cols : 0);
  bytes = sat_add(bytes, sat_mul(4, zeros));
  return sat_add(bytes, sat_mul(threads, per_thread));
}

// dmask_copy: the elements of the mask gradient each thread sums into (0: none, or one shared
// copy, counted in the caller's view already).
void check_workspace(const Problem& p, bool backward, int64_t dmask_copy = 0) {
  check_memory("working memory", workspace_bytes(p, backward, dmask_copy), 1);
}

}  // namespace

Problem make_dense_problem(const TensorView& q, const TensorView& k, const TensorView& v,
                           const AttentionParams& params, const AttentionOutputs& outputs) {
  static constexpr const char* kQ[] = {"B", "Hq", "Lq", "D"};
  static constexpr const char* kK[] = {"B", "Hkv", "Lk", "D"};
  static constexpr const char* kV[] = {"B", "Hkv", "Lk", "Dv"};
  static constexpr const char* kOut[] = {"B", "Hq", "Lq", "Dv"};
  static constexpr const char* kLse[] = {"B", "Hq", "Lq"};
  static constexpr const char* kW[] = {"B", "Hq", "Lq", "Lk"};
  check_view("q", q, kQ, true);
  check_view("k", k, kK, true);
  check_view("v", v, kV, true);
  check_inputs_dtypes(q, k, v);
  const int64_t B = q.size(0), Hq = q.size(1), Lq = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), Lk = k.size(2), Dv = v.size(3);
  check_shape("k", k, {B, Hkv, Lk, D}, kK);
  check_shape("v", v, {B, Hkv, Lk, Dv}, kV);
  check_heads(Hq, Hkv);
  check_lengths("kv_lens", params.kv_lens, B, Lk, "Lk");
  check_lengths("q_lens", params.q_lens, B, Lq, "Lq");

  if (!outputs.out.present()) fail("out: is required (data is null)");
  check_view("out", outputs.out, kOut);
  check_shape("out", outputs.out, {B, Hq, Lq, Dv}, kOut);
  check_output_dtype("out", outputs.out.dtype, q.dtype);
  check_writable("out", outputs.out);

  Problem p;
  p.batch = B, p.heads_q = Hq, p.heads_kv = Hkv, p.head_dim = D, p.value_dim = Dv;
  p.max_q_rows = Lq, p.max_kv_len = Lk, p.weights_cols = Lk;
  p.q = operand4(q), p.k = operand4(k), p.v = operand4(v);
  p.out = operand4(outputs.out);
  if (outputs.lse.present()) {
    check_view("lse", outputs.lse, kLse);
    check_shape("lse", outputs.lse, {B, Hq, Lq}, kLse);
    if (outputs.lse.dtype != DType::kF32)
      fail("lse: dtype must be float32, got ", dtype_name(outputs.lse.dtype));
    check_writable("lse", outputs.lse);
    const TensorView& l = outputs.lse;
    p.lse = operand(l, l.stride(0), l.stride(1), l.stride(2), 0);
  }
  if (outputs.weights.present()) {
    check_view("weights", outputs.weights, kW);
    check_shape("weights", outputs.weights, {B, Hq, Lq, Lk}, kW);
    check_output_dtype("weights", outputs.weights.dtype, q.dtype);
    check_writable("weights", outputs.weights);
    p.weights = operand4(outputs.weights);
  }
  p.mask = mask_operand(params.mask, {B, Hq, Lq, Lk});
  fill_common_params(p, params);
  check_no_overlap({{"out", outputs.out}, {"lse", outputs.lse}, {"weights", outputs.weights}},
                   {{"q", q}, {"k", k}, {"v", v}, {"mask", params.mask}});
  check_workspace(p, false);
  check_accumulate(p, outputs);

  p.sequences.resize(B);
  for (int64_t b = 0; b < B; ++b) {
    Sequence& s = p.sequences[b];
    s.q_start = 0;
    s.q_rows = Lq;
    s.q_len = params.q_lens.empty() ? Lq : params.q_lens[b];
    s.kv_start = 0;
    s.kv_rows = Lk;
    s.kv_len = params.kv_lens.empty() ? Lk : params.kv_lens[b];
  }
  return p;
}

namespace {

// Offsets: B+1 entries, starting at 0, non-decreasing, ending at the packed length.
void check_offsets(const char* arg, std::span<const int64_t> cu, int64_t total,
                   const char* total_name) {
  if (cu.empty()) fail(arg, ": expected B+1 offsets (at least the leading 0), got none");
  if (cu[0] != 0) fail(arg, "[0] must be 0, got ", cu[0]);
  for (size_t b = 1; b < cu.size(); ++b)
    if (cu[b] < cu[b - 1])
      fail(arg, ": offsets must not decrease, but ", arg, "[", b, "] = ", cu[b], " < ", arg, "[",
           b - 1, "] = ", cu[b - 1]);
  if (cu.back() != total)
    fail(arg, "[", cu.size() - 1, "] = ", cu.back(), " must equal ", total_name, " = ", total);
}

}  // namespace

Problem make_varlen_problem(const TensorView& q, const TensorView& k, const TensorView& v,
                            std::span<const int64_t> cu_q, std::span<const int64_t> cu_k,
                            const AttentionParams& params, const AttentionOutputs& outputs) {
  static constexpr const char* kQ[] = {"total_q", "Hq", "D"};
  static constexpr const char* kK[] = {"total_k", "Hkv", "D"};
  static constexpr const char* kV[] = {"total_k", "Hkv", "Dv"};
  static constexpr const char* kOut[] = {"total_q", "Hq", "Dv"};
  static constexpr const char* kLse[] = {"Hq", "total_q"};
  static constexpr const char* kW[] = {"Hq", "total_q", "max_k"};
  check_view("q", q, kQ, true);
  check_view("k", k, kK, true);
  check_view("v", v, kV, true);
  check_inputs_dtypes(q, k, v);
  const int64_t Tq = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t Tk = k.size(0), Hkv = k.size(1), Dv = v.size(2);
  check_shape("k", k, {Tk, Hkv, D}, kK);
  check_shape("v", v, {Tk, Hkv, Dv}, kV);
  check_heads(Hq, Hkv);
  check_offsets("cu_seqlens_q", cu_q, Tq, "total_q");
  check_offsets("cu_seqlens_k", cu_k, Tk, "total_k");
  if (cu_q.size() != cu_k.size())
    fail("cu_seqlens_k: expected ", cu_q.size(), " offsets like cu_seqlens_q, got ", cu_k.size());
  if (!params.kv_lens.empty() || !params.q_lens.empty())
    fail("kv_lens/q_lens: must be empty for varlen calls (the offsets give the lengths)");
  const int64_t B = static_cast<int64_t>(cu_q.size()) - 1;

  Problem p;
  p.batch = B, p.heads_q = Hq, p.heads_kv = Hkv, p.head_dim = D, p.value_dim = Dv;
  p.sequences.resize(B);
  for (int64_t b = 0; b < B; ++b) {
    Sequence& s = p.sequences[b];
    s.q_start = cu_q[b];
    s.q_rows = s.q_len = cu_q[b + 1] - cu_q[b];
    s.kv_start = cu_k[b];
    s.kv_rows = s.kv_len = cu_k[b + 1] - cu_k[b];
    p.max_q_rows = std::max(p.max_q_rows, s.q_rows);
    p.max_kv_len = std::max(p.max_kv_len, s.kv_len);
  }
  p.weights_cols = p.max_kv_len;

  if (!outputs.out.present()) fail("out: is required (data is null)");
  check_view("out", outputs.out, kOut);
  check_shape("out", outputs.out, {Tq, Hq, Dv}, kOut);
  check_output_dtype("out", outputs.out.dtype, q.dtype);
  check_writable("out", outputs.out);

  // Packed [T, H, X] views become [b = 0-stride, h, row, x] operands.
  p.q = operand(q, 0, q.stride(1), q.stride(0), q.stride(2));
  p.k = operand(k, 0, k.stride(1), k.stride(0), k.stride(2));
  p.v = operand(v, 0, v.stride(1), v.stride(0), v.stride(2));
  const TensorView& o = outputs.out;
  p.out = operand(o, 0, o.stride(1), o.stride(0), o.stride(2));
  if (outputs.lse.present()) {
    check_view("lse", outputs.lse, kLse);
    check_shape("lse", outputs.lse, {Hq, Tq}, kLse);
    if (outputs.lse.dtype != DType::kF32)
      fail("lse: dtype must be float32, got ", dtype_name(outputs.lse.dtype));
    check_writable("lse", outputs.lse);
    const TensorView& l = outputs.lse;
    p.lse = operand(l, 0, l.stride(0), l.stride(1), 0);
  }
  if (outputs.weights.present()) {
    check_view("weights", outputs.weights, kW);
    check_shape("weights", outputs.weights,
                {Hq, Tq, p.max_kv_len}, kW);
    check_output_dtype("weights", outputs.weights.dtype, q.dtype);
    check_writable("weights", outputs.weights);
    const TensorView& w = outputs.weights;
    p.weights = operand(w, 0, w.stride(0), w.stride(1), w.stride(2));
  }
  p.mask = mask_operand(params.mask, {B, Hq, std::max<int64_t>(p.max_q_rows, 1),
                                      std::max<int64_t>(p.max_kv_len, 1)});
  fill_common_params(p, params);
  check_no_overlap({{"out", outputs.out}, {"lse", outputs.lse}, {"weights", outputs.weights}},
                   {{"q", q}, {"k", k}, {"v", v}, {"mask", params.mask}});
  check_workspace(p, false);
  check_accumulate(p, outputs);
  return p;
}

namespace {

// [T, H, X] packed views become [b = 0-stride, h, row, x] operands.
Operand packed_operand(const TensorView& t) {
  return operand(t, 0, t.stride(1), t.stride(0), t.stride(2));
}

// `t` must have exactly the shape of `like` (shape names in `dims`).
void check_same_shape(const char* arg, const TensorView& t, const TensorView& like,
                      std::span<const char* const> dims) {
  check_view(arg, t, dims);
  for (int i = 0; i < like.rank(); ++i)
    if (t.size(i) != like.size(i))
      fail(arg, ": dim ", i, " (", dims[i], ") must be ", like.size(i), ", got ", t.size(i),
           " (shape ", shape_string(t), ")");
}

struct BackwardDims {
  std::span<const char* const> q, k, v, out;
};

// The backward's own arguments, on top of the forward problem `p` that q, k, v, out and lse
// made: dout like out, the gradients like their inputs, and dmask like the mask.
BackwardProblem finish_backward(Problem p, const TensorView& q, const TensorView& k,
                                const TensorView& v, const TensorView& out, const TensorView& lse,
                                const TensorView& dout, const AttentionParams& params,
                                const AttentionGradients& grads, const BackwardDims& dims,
                                Operand (*to_operand)(const TensorView&)) {
  BackwardProblem bp;
  bp.fwd = std::move(p);
  if (!dout.present()) fail("dout: is required (data is null)");
  check_same_shape("dout", dout, out, dims.out);
  check_output_dtype("dout", dout.dtype, q.dtype);
  bp.dout = to_operand(dout);
  struct Grad {
    const char* name;
    const MutableTensorView& view;
    const TensorView& like;
    std::span<const char* const> dims;
    Operand& operand;
  };
  const Grad all[] = {{"dq", grads.dq, q, dims.q, bp.dq}, {"dk", grads.dk, k, dims.k, bp.dk},
                      {"dv", grads.dv, v, dims.v, bp.dv}};
  for (const Grad& g : all) {
    if (!g.view.present()) fail(g.name, ": is required (data is null)");
    check_same_shape(g.name, g.view, g.like, g.dims);
    check_output_dtype(g.name, g.view.dtype, q.dtype);
    check_writable(g.name, g.view);
    g.operand = to_operand(g.view);
  }
  if (grads.dmask.present()) {
    const TensorView& m = params.mask;
    if (!m.present()) fail("dmask: there is no params.mask to take the gradient of");
    if (m.dtype == DType::kBool) fail("dmask: a bool mask has no gradient; pass a float mask");
    const TensorView dm = grads.dmask;
    bool same = dm.rank() == m.rank();
    for (int i = 0; same && i < m.rank(); ++i) same = dm.size(i) == m.size(i);
    if (!same)
      fail("dmask: expected the mask's shape ", shape_string(m), ", got shape ", shape_string(dm));
    const char* names[4] = {"d0", "d1", "d2", "d3"};
    check_view("dmask", dm, std::span(names, m.rank()));
    if (grads.dmask.dtype != DType::kF32 && grads.dmask.dtype != m.dtype)
      fail("dmask: dtype must be float32 or the mask's dtype ", dtype_name(m.dtype), ", got ",
           dtype_name(grads.dmask.dtype));
    check_writable("dmask", grads.dmask);
    bp.dmask_view = grads.dmask;
    // Row-major strides of the mask's shape, then the same broadcast as the mask itself.
    Layout dense = m.layout;
    int64_t size = 1;
    for (int i = m.rank() - 1; i >= 0; --i) dense.strides[i] = size, size *= m.size(i);
    // The forward's broadcast target: [B, Hq, Lq, Lk] for a dense call (an empty Lq or Lk stays
    // 0), the longest sequences but at least 1 for a packed one.
    const Problem& f = bp.fwd;
    const int64_t least = to_operand == packed_operand ? 1 : 0;
    bp.dmask_dense = mask_operand({m.data, m.dtype, dense},
                                  {f.batch, f.heads_q, std::max(f.max_q_rows, least),
                                   std::max(f.max_kv_len, least)});
    bp.dmask_size = size;
    const int64_t* s = bp.dmask_dense.stride;
    bp.dmask_shared = (f.batch > 1 && s[0] == 0) || (f.heads_q > 1 && s[1] == 0) ||
                      (f.max_q_rows > 1 && s[2] == 0);
  }
  check_no_overlap({{"dq", grads.dq}, {"dk", grads.dk}, {"dv", grads.dv}, {"dmask", grads.dmask}},
                   {{"q", q}, {"k", k}, {"v", v}, {"out", out}, {"lse", lse}, {"dout", dout},
                    {"mask", params.mask}});
  check_workspace(bp.fwd, true, bp.dmask_shared ? bp.dmask_size : 0);
  return bp;
}

// out and lse are checked as the forward checked them, as if they were its outputs.
AttentionOutputs as_outputs(const TensorView& out, const TensorView& lse) {
  if (!lse.present()) fail("lse: is required (the forward's log-sum-exp), data is null");
  return {{const_cast<void*>(out.data), out.dtype, out.layout},
          {const_cast<void*>(lse.data), lse.dtype, lse.layout}};
}

}  // namespace

BackwardProblem make_backward_problem(const TensorView& q, const TensorView& k,
                                      const TensorView& v, const TensorView& out,
                                      const TensorView& lse, const TensorView& dout,
                                      const AttentionParams& params,
                                      const AttentionGradients& grads) {
  static constexpr const char* kQ[] = {"B", "Hq", "Lq", "D"};
  static constexpr const char* kK[] = {"B", "Hkv", "Lk", "D"};
  static constexpr const char* kV[] = {"B", "Hkv", "Lk", "Dv"};
  static constexpr const char* kOut[] = {"B", "Hq", "Lq", "Dv"};
  return finish_backward(make_dense_problem(q, k, v, params, as_outputs(out, lse)), q, k, v, out,
                         lse, dout, params, grads, {kQ, kK, kV, kOut}, operand4);
}

BackwardProblem make_varlen_backward_problem(const TensorView& q, const TensorView& k,
                                             const TensorView& v,
                                             std::span<const int64_t> cu_seqlens_q,
                                             std::span<const int64_t> cu_seqlens_k,
                                             const TensorView& out, const TensorView& lse,
                                             const TensorView& dout, const AttentionParams& params,
                                             const AttentionGradients& grads) {
  static constexpr const char* kQ[] = {"total_q", "Hq", "D"};
  static constexpr const char* kK[] = {"total_k", "Hkv", "D"};
  static constexpr const char* kV[] = {"total_k", "Hkv", "Dv"};
  static constexpr const char* kOut[] = {"total_q", "Hq", "Dv"};
  return finish_backward(make_varlen_problem(q, k, v, cu_seqlens_q, cu_seqlens_k, params,
                                             as_outputs(out, lse)),
                         q, k, v, out, lse, dout, params, grads, {kQ, kK, kV, kOut},
                         packed_operand);
}

}  // namespace xattn::core
