#include "oracle_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

namespace xattn::testing {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

int64_t product(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

void store(DType t, void* p, double x) {
  switch (t) {
    case DType::kF32: *static_cast<float*>(p) = static_cast<float>(x); break;
    case DType::kF16: *static_cast<uint16_t*>(p) = float_to_f16(static_cast<float>(x)); break;
    case DType::kBF16: *static_cast<uint16_t*>(p) = float_to_bf16(static_cast<float>(x)); break;
    case DType::kBool: *static_cast<uint8_t*>(p) = x != 0; break;
  }
}

double load(DType t, const void* p) {
  switch (t) {
    case DType::kF32: return *static_cast<const float*>(p);
    case DType::kF16: return f16_to_float(*static_cast<const uint16_t*>(p));
    case DType::kBF16: return bf16_to_float(*static_cast<const uint16_t*>(p));
    case DType::kBool: return *static_cast<const uint8_t*>(p) ? 1.0 : 0.0;
  }
  return 0;
}

}  // namespace

double round_to(DType t, double x) {
  alignas(4) uint8_t tmp[4];
  store(t, tmp, x);
  return load(t, tmp);
}

StridedBuffer::StridedBuffer(std::vector<int64_t> shape, DType dtype, Layout4 layout)
    : shape_(std::move(shape)), dtype_(dtype) {
  const int rank = static_cast<int>(shape_.size());
  layout_.rank = rank;
  // Memory order of the logical dims, and padding per dim.
  std::vector<int> order(rank);
  for (int i = 0; i < rank; ++i) order[i] = i;
  std::vector<int64_t> pad(rank, 0);
  if (layout == Layout4::kSwapHeadsAndRows && rank == 4) std::swap(order[1], order[2]);
  if (layout == Layout4::kPadded) {
    for (int i = 0; i < rank; ++i) pad[i] = 1 + i % 2;
  }
  // Innermost memory dim first; kPadded gives the last dim stride 2 (a non-unit element stride).
  int64_t stride = layout == Layout4::kPadded ? 2 : 1;
  for (int m = rank - 1; m >= 0; --m) {
    const int d = order[m];
    layout_.shape[d] = shape_[d];
    layout_.strides[d] = stride;
    stride *= shape_[d] + pad[d];
  }
  const int64_t elements = stride;
  if (layout == Layout4::kReversedRows && rank >= 2) {
    const int d = rank - 2;  // rows run backwards in memory
    base_offset_ = (shape_[d] - 1) * layout_.strides[d];
    layout_.strides[d] = -layout_.strides[d];
  }
  storage_.assign(elements * dtype_size(dtype_), 0);
}

int64_t StridedBuffer::offset_of(int64_t flat) const {
  int64_t off = 0;
  for (int d = static_cast<int>(shape_.size()) - 1; d >= 0; --d) {
    off += (flat % shape_[d]) * layout_.strides[d];
    flat /= shape_[d];
  }
  return off;
}

void StridedBuffer::fill(const std::vector<double>& values) {
  auto* p = static_cast<uint8_t*>(base());
  for (int64_t i = 0; i < static_cast<int64_t>(values.size()); ++i)
    store(dtype_, p + offset_of(i) * dtype_size(dtype_), values[i]);
}

std::vector<double> StridedBuffer::read() const {
  std::vector<double> out(product(shape_));
  const auto* p = static_cast<const uint8_t*>(base());
  for (int64_t i = 0; i < static_cast<int64_t>(out.size()); ++i)
    out[i] = load(dtype_, p + offset_of(i) * dtype_size(dtype_));
  return out;
}

void StridedBuffer::poison(uint8_t byte) { std::fill(storage_.begin(), storage_.end(), byte); }

std::string RandomCase::describe() const {
  const auto& r = ref;
  std::ostringstream os;
  os << "B=" << r.batch << " Hq=" << r.heads_q << " Hkv=" << r.heads_kv << " Lq=" << r.q_len
     << " Lk=" << r.kv_len << " D=" << r.head_dim << " Dv=" << r.value_dim
     << " dtype=" << dtype_name(dtype) << " out=" << dtype_name(out_dtype)
     << " layout=" << static_cast<int>(layout) << " causal=" << r.causal
     << " bottom_right=" << r.bottom_right << " window=(" << r.window_left << ","
     << r.window_right << ") diagonal_offset=" << r.diagonal_offset << " softcap=" << r.softcap << " scale=" << r.scale
     << " kv_lens=" << r.kv_lens.size() << " q_lens=" << r.q_lens.size()
     << " mask=" << static_cast<int>(mask_kind) << " mask_rank=" << mask_shape.size()
     << " threads=" << threads << " weights=" << want_weights
     << " bf16_probabilities=" << bf16_probabilities;
  return os.str();
}

namespace {

// Calls fn(dense, flat) for every element of [B, Hq, Lq, Lk]: its row-major index, and the
// row-major index into the case's mask that broadcasts onto it (right-aligned, size-1 dims).
template <class Fn>
void for_each_mask_element(const RandomCase& c, const Fn& fn) {
  const reference::Problem& p = c.ref;
  const int rank = static_cast<int>(c.mask_shape.size()), off = 4 - rank;
  int64_t dense = 0;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads_q; ++h)
      for (int64_t i = 0; i < p.q_len; ++i)
        for (int64_t j = 0; j < p.kv_len; ++j, ++dense) {
          const int64_t idx[4] = {b, h, i, j};
          int64_t flat = 0;
          for (int d = 0; d < rank; ++d)
            flat = flat * c.mask_shape[d] + (c.mask_shape[d] == 1 ? 0 : idx[d + off]);
          fn(dense, flat);
        }
}

}  // namespace

RandomCase random_case(std::mt19937_64& rng) {
  auto pick = [&](std::initializer_list<int64_t> xs) {
    return xs.begin()[std::uniform_int_distribution<size_t>(0, xs.size() - 1)(rng)];
  };
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  RandomCase c;
  reference::Problem& p = c.ref;
  p.batch = pick({1, 1, 2, 3});
  p.heads_kv = pick({1, 1, 2, 3});
  p.heads_q = p.heads_kv * pick({1, 1, 2, 4});
  p.q_len = pick({1, 2, 7, 16, 17, 33, 63, 64, 65, 100, 129});
  p.kv_len = pick({1, 3, 7, 16, 17, 63, 64, 65, 128, 130, 200});
  p.head_dim = pick({1, 3, 8, 16, 17, 32, 64, 65, 128});
  p.value_dim = chance(0.6) ? p.head_dim : pick({1, 5, 16, 24, 40, 64, 65, 96});
  // Keep the float64 oracle fast.
  while (p.batch * p.heads_q * p.q_len * p.kv_len * (p.head_dim + p.value_dim) > 3'000'000)
    p.q_len = std::max<int64_t>(1, p.q_len / 2), p.kv_len = std::max<int64_t>(1, p.kv_len * 3 / 4);

  c.dtype = static_cast<DType>(pick({0, 0, 1, 2}));
  c.out_dtype = chance(0.5) ? DType::kF32 : c.dtype;
  c.layout = static_cast<Layout4>(pick({0, 1, 2, 3}));
  p.causal = chance(0.35);
  p.bottom_right = chance(0.5);
  if (chance(0.25)) {
    p.window_left = pick({-1, 0, 1, 5, 20});
    p.window_right = pick({-1, 0, 2, 9});
  }
  if (chance(0.2)) p.softcap = pick({1, 5, 30}) * 1.0;
  c.default_scale = chance(0.7);
  p.scale = c.default_scale ? 1.0 / std::sqrt(static_cast<double>(p.head_dim))
                            : std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  if (chance(0.3))
    for (int64_t b = 0; b < p.batch; ++b)
      p.kv_lens.push_back(std::uniform_int_distribution<int64_t>(0, p.kv_len)(rng));
  if (chance(0.2))
    for (int64_t b = 0; b < p.batch; ++b)
      p.q_lens.push_back(std::uniform_int_distribution<int64_t>(0, p.q_len)(rng));
  c.want_lse = chance(0.8);
  c.want_weights = chance(0.3);
  c.threads = static_cast<int>(pick({1, 2, 2, 4}));
  c.bf16_probabilities = c.dtype == DType::kBF16 && chance(0.5);

  std::normal_distribution<double> normal(0.0, 1.0);
  auto random_values = [&](int64_t n, double scale) {
    std::vector<double> x(n);
    for (double& v : x) v = round_to(c.dtype, scale * normal(rng));
    return x;
  };
  // Larger query norms for a few cases, so some rows are peaked rather than flat.
  p.q = random_values(p.batch * p.heads_q * p.q_len * p.head_dim, chance(0.2) ? 4.0 : 1.0);
  p.k = random_values(p.batch * p.heads_kv * p.kv_len * p.head_dim, 1.0);
  p.v = random_values(p.batch * p.heads_kv * p.kv_len * p.value_dim, 1.0);

  const int mask_roll = static_cast<int>(pick({0, 0, 0, 1, 2}));
  c.mask_kind = static_cast<RandomCase::MaskKind>(mask_roll);
  if (c.mask_kind != RandomCase::MaskKind::kNone) {
    const int64_t full[4] = {p.batch, p.heads_q, p.q_len, p.kv_len};
    const int rank = static_cast<int>(pick({2, 3, 4, 4}));
    for (int d = 4 - rank; d < 4; ++d) c.mask_shape.push_back(chance(0.7) ? full[d] : 1);
    const int64_t n = product(c.mask_shape);
    for (int64_t i = 0; i < n; ++i) {
      if (c.mask_kind == RandomCase::MaskKind::kBool) c.mask_values.push_back(chance(0.75));
      else c.mask_values.push_back(chance(0.15) ? -kInf : round_to(c.dtype, normal(rng)));
    }
    // The oracle's dense additive mask.
    p.mask.assign(p.batch * p.heads_q * p.q_len * p.kv_len, 0.0);
    for_each_mask_element(c, [&](int64_t dense, int64_t flat) {
      const double m = c.mask_values[flat];
      p.mask[dense] = c.mask_kind == RandomCase::MaskKind::kBool ? (m != 0 ? 0.0 : -kInf) : m;
    });
  }
  return c;
}

std::vector<double> reduce_to_mask_shape(const RandomCase& c, const std::vector<double>& dense) {
  int64_t size = 1;
  for (int64_t d : c.mask_shape) size *= d;
  std::vector<double> out(size, 0.0);
  for_each_mask_element(c, [&](int64_t d, int64_t flat) { out[flat] += dense[d]; });
  return out;
}

namespace {

// A case's inputs in its dtype and layout, and the parameters pointing into them.
struct CaseInputs {
  explicit CaseInputs(const RandomCase& c)
      : q({c.ref.batch, c.ref.heads_q, c.ref.q_len, c.ref.head_dim}, c.dtype, c.layout),
        k({c.ref.batch, c.ref.heads_kv, c.ref.kv_len, c.ref.head_dim}, c.dtype, c.layout),
        v({c.ref.batch, c.ref.heads_kv, c.ref.kv_len, c.ref.value_dim}, c.dtype, c.layout),
        mask(c.mask_shape.empty() ? std::vector<int64_t>{1} : c.mask_shape,
             c.mask_kind == RandomCase::MaskKind::kBool ? DType::kBool : c.dtype,
             Layout4::kContiguous) {
    const reference::Problem& p = c.ref;
    q.fill(p.q), k.fill(p.k), v.fill(p.v);
    if (!c.default_scale) params.scale = static_cast<float>(p.scale);
    params.softcap = static_cast<float>(p.softcap);
    params.causal = p.causal;
    params.align = p.bottom_right ? CausalAlign::kBottomRight : CausalAlign::kTopLeft;
    params.window = {p.window_left, p.window_right};
    params.diagonal_offset = p.diagonal_offset;
    params.kv_lens = p.kv_lens;
    params.q_lens = p.q_lens;
    params.num_threads = c.threads;
    params.bf16_probabilities = c.bf16_probabilities;
    if (c.mask_kind != RandomCase::MaskKind::kNone) {
      mask.fill(c.mask_values);
      params.mask = mask.view();
    }
  }
  CaseInputs(const CaseInputs&) = delete;  // params points into the buffers

  StridedBuffer q, k, v, mask;
  AttentionParams params;
};

}  // namespace

Outputs run_xattn(const RandomCase& c) {
  const reference::Problem& p = c.ref;
  const CaseInputs in(c);
  const StridedBuffer &q = in.q, &k = in.k, &v = in.v;
  const AttentionParams& params = in.params;
  StridedBuffer out({p.batch, p.heads_q, p.q_len, p.value_dim}, c.out_dtype, c.layout);
  StridedBuffer lse({p.batch, p.heads_q, p.q_len}, DType::kF32, Layout4::kContiguous);
  StridedBuffer weights({p.batch, p.heads_q, p.q_len, p.kv_len}, c.out_dtype, c.layout);
  out.poison(0xff), lse.poison(0xff), weights.poison(0xff);
  AttentionOutputs outputs{out.mutable_view()};
  if (c.want_lse) outputs.lse = lse.mutable_view();
  if (c.want_weights) outputs.weights = weights.mutable_view();
  attention(q.view(), k.view(), v.view(), params, outputs);
  Outputs r;
  r.out = out.read();
  if (c.want_lse) r.lse = lse.read();
  if (c.want_weights) r.weights = weights.read();
  return r;
}

reference::Gradients run_xattn_backward(const RandomCase& c, const std::vector<double>& dout,
                                        int backward_threads) {
  const reference::Problem& p = c.ref;
  CaseInputs in(c);
  in.params.bf16_probabilities = false;  // the gradients are those of the exact forward
  const std::vector<int64_t> out_shape = {p.batch, p.heads_q, p.q_len, p.value_dim};
  StridedBuffer out(out_shape, DType::kF32, Layout4::kContiguous);
  StridedBuffer lse({p.batch, p.heads_q, p.q_len}, DType::kF32, Layout4::kContiguous);
  attention(in.q.view(), in.k.view(), in.v.view(), in.params,
            {out.mutable_view(), lse.mutable_view()});
  StridedBuffer dout_buf(out_shape, DType::kF32, c.layout);
  dout_buf.fill(dout);
  StridedBuffer dq({p.batch, p.heads_q, p.q_len, p.head_dim}, c.out_dtype, c.layout);
  StridedBuffer dk({p.batch, p.heads_kv, p.kv_len, p.head_dim}, c.out_dtype, c.layout);
  StridedBuffer dv({p.batch, p.heads_kv, p.kv_len, p.value_dim}, c.out_dtype, c.layout);
  dq.poison(0xff), dk.poison(0xff), dv.poison(0xff);
  if (backward_threads > 0) in.params.num_threads = backward_threads;
  // A float mask gets its gradient too, f32, shaped like the mask.
  const bool float_mask = c.mask_kind == RandomCase::MaskKind::kFloat;
  StridedBuffer dmask(float_mask ? c.mask_shape : std::vector<int64_t>{1}, DType::kF32,
                      Layout4::kContiguous);
  dmask.poison(0xff);
  AttentionGradients grads{dq.mutable_view(), dk.mutable_view(), dv.mutable_view()};
  if (float_mask) grads.dmask = dmask.mutable_view();
  attention_backward(in.q.view(), in.k.view(), in.v.view(), out.view(), lse.view(),
                     dout_buf.view(), in.params, grads);
  reference::Gradients g;
  g.dq = dq.read(), g.dk = dk.read(), g.dv = dv.read();
  if (float_mask) g.dmask = dmask.read();
  return g;
}

Check compare(const RandomCase& c, const Outputs& got, const reference::Result& want) {
  // Tolerances. Inputs are exact (the oracle sees the same 16-bit-rounded values), so the error
  // is f32 arithmetic, bounded by 1e-5·max|V| for outputs, plus, for a 16-bit output dtype, the
  // final rounding: half an ulp, 2^-11 (f16) or 2^-8 (bf16) of the value.
  double max_v = 0;
  for (double x : c.ref.v) max_v = std::max(max_v, std::abs(x));
  const double rounding = c.out_dtype == DType::kF16 ? 0x1p-11 : c.out_dtype == DType::kBF16 ? 0x1p-8 : 0;
  Check check;
  auto visit = [&](const char* name, const std::vector<double>& g, const std::vector<double>& w,
                   double abs_tol, double rel_tol) {
    for (size_t i = 0; i < w.size(); ++i) {
      double ratio;
      if (std::isinf(w[i]) || std::isinf(g[i])) {
        ratio = g[i] == w[i] ? 0 : kInf;
      } else {
        const double tol = abs_tol + rel_tol * std::abs(w[i]) + 1e-7;
        ratio = std::isnan(g[i]) ? kInf : std::abs(g[i] - w[i]) / tol;
      }
      if (ratio > check.worst_ratio) {
        check.worst_ratio = ratio;
        std::ostringstream os;
        os << name << "[" << i << "] got " << g[i] << " want " << w[i];
        check.where = os.str();
      }
    }
  };
  // bf16 probabilities (opt-in) add their own rounding, 2^-9 of each weight, so at most
  // 2^-9·Σp|v|/Σp <= 2^-9·max|V| (AttentionParams::bf16_probabilities).
  const double pv_rounding = c.bf16_probabilities ? 0x1p-9 * max_v : 0;
  visit("out", got.out, want.out, 1e-5 * max_v + pv_rounding, rounding);
  if (c.want_lse) visit("lse", got.lse, want.lse, 1e-5, 1e-5);
  if (c.want_weights) visit("weights", got.weights, want.weights, 1e-5, rounding);
  return check;
}

}  // namespace xattn::testing
