#pragma once
// The attention fuzzer's oracle: a decoded call turned into float64 reference problems (one for a
// dense batch, one per sequence for varlen), the results laid out as the call's outputs are, and
// which input elements some visible (query, key) pair needs, so the others may hold NaN or Inf.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attention_case.h"
#include "reference/reference.h"

namespace xattn::fuzz {

inline constexpr double kInf = std::numeric_limits<double>::infinity();

// The mask broadcast onto [B, Hq, rows, cols]: additive values (a bool false is -inf) and, for
// each element, the row-major index into the mask it comes from.
struct DenseMask {
  std::vector<double> values;
  std::vector<int64_t> source;
};

inline DenseMask expand_mask(const Arg& m, int64_t B, int64_t H, int64_t rows, int64_t cols) {
  DenseMask out;
  if (!m.present) return out;
  const std::vector<double> vals = m.read();
  const int r = m.layout.rank, off = 4 - r;
  out.values.reserve(static_cast<size_t>(B * H * rows * cols));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
          const int64_t idx[4] = {b, h, i, j};
          int64_t flat = 0;
          for (int d = 0; d < r; ++d)
            flat = flat * m.layout.shape[d] + (m.layout.shape[d] == 1 ? 0 : idx[d + off]);
          const double x = vals[flat];
          out.values.push_back(m.dtype == DType::kBool ? (x != 0 ? 0.0 : -kInf) : x);
          out.source.push_back(flat);
        }
  return out;
}

// The reference's visibility rule, restated: rows and keys within the lengths, causal and window
// around the (aligned) diagonal, and a mask that is not -inf.
inline bool visible(const reference::Problem& p, int64_t b, int64_t h, int64_t i, int64_t j) {
  const int64_t kv_len = p.kv_lens.empty() ? p.kv_len : p.kv_lens[b];
  const int64_t q_len = p.q_lens.empty() ? p.q_len : p.q_lens[b];
  if (i >= q_len || j >= kv_len) return false;
  const int64_t diag = p.bottom_right ? i + kv_len - q_len : i;
  if (p.causal && j > diag) return false;
  if (p.window_left >= 0 && j < diag - p.window_left) return false;
  if (p.window_right >= 0 && j > diag + p.window_right) return false;
  return p.mask.empty() || p.mask[((b * p.heads_q + h) * p.q_len + i) * p.kv_len + j] != -kInf;
}

// One reference problem: a dense batch, or one varlen sequence with its first packed rows.
struct Part {
  reference::Problem p;
  int64_t seq = 0, q0 = 0, k0 = 0;
  // Which rows of q ([B,Hq,Lq]) and of k and v ([B,Hkv,Lk]) a visible pair reads.
  std::vector<char> q_needed, k_needed;
  double score_bound = 0;  // max over visible pairs of |scale|·Σ|q·k| + |mask|
  double max_v = 0;        // max |v| over the keys some pair sees
};

inline void analyse(Part& part) {
  const reference::Problem& p = part.p;
  const int64_t B = p.batch, Hq = p.heads_q, Hkv = p.heads_kv, Lq = p.q_len, Lk = p.kv_len,
                D = p.head_dim, Dv = p.value_dim;
  part.q_needed.assign(static_cast<size_t>(B * Hq * Lq), 0);
  part.k_needed.assign(static_cast<size_t>(B * Hkv * Lk), 0);
  if (Hkv == 0) return;
  const int64_t group = Hq / Hkv;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < Lq; ++i) {
        const int64_t q_len = p.q_lens.empty() ? Lq : p.q_lens[b];
        const int64_t row = (b * Hq + h) * Lq + i;
        part.q_needed[row] = i < q_len;
        for (int64_t j = 0; j < Lk; ++j) {
          if (!visible(p, b, h, i, j)) continue;
          const int64_t key = (b * Hkv + h / group) * Lk + j;
          part.k_needed[key] = 1;
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += std::abs(p.q[row * D + d] * p.k[key * D + d]);
          s *= std::abs(p.scale);
          if (!p.mask.empty()) s += std::abs(p.mask[row * Lk + j]);
          part.score_bound = std::max(part.score_bound, s);
          for (int64_t e = 0; e < Dv; ++e) part.max_v = std::max(part.max_v, std::abs(p.v[key * Dv + e]));
        }
      }
}

struct Oracle {
  std::vector<Part> parts;
  int64_t B = 0, Hq = 0, Hkv = 0, D = 0, Dv = 0;
  int64_t rows = 0, cols = 0;  // what the mask broadcasts to: Lq, Lk (varlen: max lengths, >= 1)
  int64_t weights_cols = 0;    // Lk, or varlen's max_k
  int64_t Tq = 0, Tk = 0;      // varlen packed lengths
  DenseMask mask;

  double score_bound() const {
    double s = 0;
    for (const Part& p : parts) s = std::max(s, p.score_bound);
    return s;
  }
  double max_v() const {
    double m = 0;
    for (const Part& p : parts) m = std::max(m, p.max_v);
    return m;
  }
};

inline void set_params(reference::Problem& p, const Case& c, int64_t D) {
  p.causal = c.causal;
  p.bottom_right = c.align == CausalAlign::kBottomRight;
  // |diagonal - j| <= Lq + Lk, so a wider window is unbounded (and must not overflow here).
  const int64_t widest = p.q_len + p.kv_len + 1;
  p.window_left = c.window.left < 0 ? -1 : std::min(c.window.left, widest);
  p.window_right = c.window.right < 0 ? -1 : std::min(c.window.right, widest);
  p.scale = c.scale ? *c.scale : static_cast<double>(1.0f / std::sqrt(static_cast<float>(D)));
  p.softcap = c.softcap;
}

// The call as reference problems. Only for calls the contract accepts (shapes consistent).
inline Oracle make_oracle(const Case& c) {
  Oracle o;
  const std::vector<double> q = c.q.read(), k = c.k.read(), v = c.v.read();
  const auto &qs = c.q.layout.shape, &ks = c.k.layout.shape, &vs = c.v.layout.shape;
  if (!c.varlen()) {
    o.B = qs[0], o.Hq = qs[1], o.rows = qs[2], o.D = qs[3];
    o.Hkv = ks[1], o.cols = ks[2], o.Dv = vs[3];
    o.weights_cols = o.cols;
    o.mask = expand_mask(c.mask, o.B, o.Hq, o.rows, o.cols);
    Part part;
    reference::Problem& p = part.p;
    p.batch = o.B, p.heads_q = o.Hq, p.heads_kv = o.Hkv, p.q_len = o.rows, p.kv_len = o.cols;
    p.head_dim = o.D, p.value_dim = o.Dv;
    p.q = q, p.k = k, p.v = v, p.mask = o.mask.values;
    if (c.has_kv_lens) p.kv_lens = c.kv_lens;
    if (c.has_q_lens) p.q_lens = c.q_lens;
    set_params(p, c, o.D);
    if (o.Hkv > 0) o.parts.push_back(std::move(part));
  } else {
    o.Tq = qs[0], o.Hq = qs[1], o.D = qs[2];
    o.Tk = ks[0], o.Hkv = ks[1], o.Dv = vs[2];
    o.B = static_cast<int64_t>(c.cu_q.size()) - 1;
    int64_t max_q = 0, max_k = 0;
    for (int64_t b = 0; b < o.B; ++b) {
      max_q = std::max(max_q, c.cu_q[b + 1] - c.cu_q[b]);
      max_k = std::max(max_k, c.cu_k[b + 1] - c.cu_k[b]);
    }
    o.rows = std::max<int64_t>(max_q, 1), o.cols = std::max<int64_t>(max_k, 1);
    o.weights_cols = max_k;
    o.mask = expand_mask(c.mask, o.B, o.Hq, o.rows, o.cols);
    for (int64_t b = 0; b < o.B && o.Hkv > 0; ++b) {
      Part part;
      part.seq = b, part.q0 = c.cu_q[b], part.k0 = c.cu_k[b];
      const int64_t lq = c.cu_q[b + 1] - c.cu_q[b], lk = c.cu_k[b + 1] - c.cu_k[b];
      reference::Problem& p = part.p;
      p.batch = 1, p.heads_q = o.Hq, p.heads_kv = o.Hkv, p.q_len = lq, p.kv_len = lk;
      p.head_dim = o.D, p.value_dim = o.Dv;
      for (int64_t h = 0; h < o.Hq; ++h)
        for (int64_t i = 0; i < lq; ++i)
          for (int64_t d = 0; d < o.D; ++d) p.q.push_back(q[((part.q0 + i) * o.Hq + h) * o.D + d]);
      for (int64_t h = 0; h < o.Hkv; ++h)
        for (int64_t j = 0; j < lk; ++j) {
          for (int64_t d = 0; d < o.D; ++d) p.k.push_back(k[((part.k0 + j) * o.Hkv + h) * o.D + d]);
          for (int64_t e = 0; e < o.Dv; ++e) p.v.push_back(v[((part.k0 + j) * o.Hkv + h) * o.Dv + e]);
        }
      if (c.mask.present)
        for (int64_t h = 0; h < o.Hq; ++h)
          for (int64_t i = 0; i < lq; ++i)
            for (int64_t j = 0; j < lk; ++j)
              p.mask.push_back(o.mask.values[((b * o.Hq + h) * o.rows + i) * o.cols + j]);
      set_params(p, c, o.D);
      o.parts.push_back(std::move(part));
    }
  }
  for (Part& part : o.parts) analyse(part);
  return o;
}

// Whether element `flat` (row-major) of q, k or v is read by some visible pair.
inline bool needed(const Case& c, const Oracle& o, const Arg& a, int64_t flat) {
  if (o.parts.empty()) return false;
  const bool is_q = &a == &c.q;
  const int64_t width = &a == &c.v ? o.Dv : o.D;
  const int64_t row = flat / width;  // [.., H, L] (dense) or [T, H] (varlen) row-major
  if (!c.varlen()) return (is_q ? o.parts[0].q_needed : o.parts[0].k_needed)[row];
  const int64_t H = is_q ? o.Hq : o.Hkv;
  const int64_t t = row / H, h = row % H;
  const std::vector<int64_t>& cu = is_q ? c.cu_q : c.cu_k;
  const int64_t b = std::upper_bound(cu.begin(), cu.end(), t) - cu.begin() - 1;
  const Part& part = o.parts[b];
  const int64_t len = is_q ? part.p.q_len : part.p.kv_len;
  return (is_q ? part.q_needed : part.k_needed)[h * len + (t - (is_q ? part.q0 : part.k0))];
}

struct Expected {
  std::vector<double> out, lse, weights;
};

// The forward's results, laid out as the call's out, lse and weights.
inline Expected expected_forward(const Oracle& o, bool varlen) {
  Expected x;
  if (!varlen) {
    if (o.parts.empty()) return x;
    const reference::Result r = reference::attention(o.parts[0].p);
    return {r.out, r.lse, r.weights};
  }
  x.out.assign(static_cast<size_t>(o.Tq * o.Hq * o.Dv), 0.0);
  x.lse.assign(static_cast<size_t>(o.Hq * o.Tq), -kInf);
  x.weights.assign(static_cast<size_t>(o.Hq * o.Tq * o.weights_cols), 0.0);
  for (const Part& part : o.parts) {
    const reference::Result r = reference::attention(part.p);
    const int64_t lq = part.p.q_len, lk = part.p.kv_len;
    for (int64_t h = 0; h < o.Hq; ++h)
      for (int64_t i = 0; i < lq; ++i) {
        const int64_t t = part.q0 + i, row = h * lq + i;
        for (int64_t e = 0; e < o.Dv; ++e) x.out[(t * o.Hq + h) * o.Dv + e] = r.out[row * o.Dv + e];
        x.lse[h * o.Tq + t] = r.lse[row];
        for (int64_t j = 0; j < lk; ++j) x.weights[(h * o.Tq + t) * o.weights_cols + j] = r.weights[row * lk + j];
      }
  }
  return x;
}

// Sums a dense [B, Hq, rows, cols] array into the mask's shape (its broadcast dims).
inline std::vector<double> reduce_to_mask(const Oracle& o, const std::vector<double>& dense,
                                          int64_t mask_numel) {
  std::vector<double> out(static_cast<size_t>(mask_numel), 0.0);
  for (size_t i = 0; i < dense.size(); ++i) out[o.mask.source[i]] += dense[i];
  return out;
}

// The gradients (and the sums of absolute terms they are accurate relative to), laid out as the
// call's dq, dk, dv and dmask; `dout` is the call's, row-major.
inline reference::Gradients expected_backward(const Oracle& o, bool varlen, const std::vector<double>& dout,
                                              int64_t mask_numel) {
  reference::Gradients x;
  std::vector<double> dmask_dense, dmask_scale_dense;
  if (!varlen) {
    // No parts: no heads, so no gradient elements; the mask's gradient is all 0.
    if (!o.parts.empty()) {
      x = reference::attention_backward(o.parts[0].p, dout);
      dmask_dense = x.dmask, dmask_scale_dense = x.dmask_scale;
    }
  } else {
    const size_t nq = static_cast<size_t>(o.Tq * o.Hq * o.D), nk = static_cast<size_t>(o.Tk * o.Hkv * o.D),
                 nv = static_cast<size_t>(o.Tk * o.Hkv * o.Dv);
    x.dq.assign(nq, 0.0), x.dq_scale.assign(nq, 0.0);
    x.dk.assign(nk, 0.0), x.dk_scale.assign(nk, 0.0);
    x.dv.assign(nv, 0.0), x.dv_scale.assign(nv, 0.0);
    dmask_dense.assign(static_cast<size_t>(o.B * o.Hq * o.rows * o.cols), 0.0);
    dmask_scale_dense = dmask_dense;
    for (const Part& part : o.parts) {
      const int64_t lq = part.p.q_len, lk = part.p.kv_len;
      std::vector<double> d;
      for (int64_t h = 0; h < o.Hq; ++h)
        for (int64_t i = 0; i < lq; ++i)
          for (int64_t e = 0; e < o.Dv; ++e) d.push_back(dout[((part.q0 + i) * o.Hq + h) * o.Dv + e]);
      const reference::Gradients g = reference::attention_backward(part.p, d);
      for (int64_t h = 0; h < o.Hq; ++h)
        for (int64_t i = 0; i < lq; ++i) {
          for (int64_t e = 0; e < o.D; ++e) {
            const int64_t to = ((part.q0 + i) * o.Hq + h) * o.D + e, from = (h * lq + i) * o.D + e;
            x.dq[to] = g.dq[from], x.dq_scale[to] = g.dq_scale[from];
          }
          for (int64_t j = 0; j < lk; ++j) {
            const int64_t to = ((part.seq * o.Hq + h) * o.rows + i) * o.cols + j, from = (h * lq + i) * lk + j;
            dmask_dense[to] = g.dmask[from], dmask_scale_dense[to] = g.dmask_scale[from];
          }
        }
      for (int64_t h = 0; h < o.Hkv; ++h)
        for (int64_t j = 0; j < lk; ++j) {
          for (int64_t e = 0; e < o.D; ++e) {
            const int64_t to = ((part.k0 + j) * o.Hkv + h) * o.D + e, from = (h * lk + j) * o.D + e;
            x.dk[to] = g.dk[from], x.dk_scale[to] = g.dk_scale[from];
          }
          for (int64_t e = 0; e < o.Dv; ++e) {
            const int64_t to = ((part.k0 + j) * o.Hkv + h) * o.Dv + e, from = (h * lk + j) * o.Dv + e;
            x.dv[to] = g.dv[from], x.dv_scale[to] = g.dv_scale[from];
          }
        }
    }
  }
  if (mask_numel > 0) {
    dmask_dense.resize(o.mask.source.size()), dmask_scale_dense.resize(o.mask.source.size());
    x.dmask = reduce_to_mask(o, dmask_dense, mask_numel);
    x.dmask_scale = reduce_to_mask(o, dmask_scale_dense, mask_numel);
  }
  return x;
}

}  // namespace xattn::fuzz
