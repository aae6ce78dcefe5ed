#include "reference/reference.h"

#include <cmath>
#include <limits>

namespace xattn::reference {

namespace {

bool is_visible(const Problem& p, int64_t b, int64_t i, int64_t j) {
  const int64_t kv_len = p.kv_lens.empty() ? p.kv_len : p.kv_lens[b];
  const int64_t q_len = p.q_lens.empty() ? p.q_len : p.q_lens[b];
  if (i >= q_len || j >= kv_len) return false;
  const int64_t diag = (p.bottom_right ? i + kv_len - q_len : i) + p.diagonal_offset;
  if (p.causal && j > diag) return false;
  if (p.window_left >= 0 && j < diag - p.window_left) return false;
  if (p.window_right >= 0 && j > diag + p.window_right) return false;
  return true;
}

// s = scale·q_i·k_j before softcap and mask, or nothing when the pair is not visible.
bool raw_score(const Problem& p, int64_t b, int64_t h, int64_t i, int64_t j, double& s) {
  const double inf = std::numeric_limits<double>::infinity();
  const int64_t Hq = p.heads_q, Lq = p.q_len, Lk = p.kv_len, D = p.head_dim;
  const int64_t hk = h / (p.heads_q / p.heads_kv);
  if (!is_visible(p, b, i, j)) return false;
  if (!p.mask.empty() && p.mask[((b * Hq + h) * Lq + i) * Lk + j] == -inf) return false;
  s = 0;
  for (int64_t d = 0; d < D; ++d)
    s += p.q[((b * Hq + h) * Lq + i) * D + d] * p.k[((b * p.heads_kv + hk) * Lk + j) * D + d];
  s *= p.scale;
  return true;
}

}  // namespace

Gradients attention_backward(const Problem& p, const std::vector<double>& dout) {
  const int64_t B = p.batch, Hq = p.heads_q, Hkv = p.heads_kv, Lq = p.q_len, Lk = p.kv_len,
                D = p.head_dim, Dv = p.value_dim, group = p.heads_q / p.heads_kv;
  const Result fwd = attention(p);
  Gradients g;
  g.dq.assign(p.q.size(), 0.0);
  g.dk.assign(p.k.size(), 0.0);
  g.dv.assign(p.v.size(), 0.0);
  g.dmask.assign(B * Hq * Lq * Lk, 0.0);
  g.dq_scale.assign(p.q.size(), 0.0);
  g.dk_scale.assign(p.k.size(), 0.0);
  g.dv_scale.assign(p.v.size(), 0.0);
  g.dmask_scale.assign(B * Hq * Lq * Lk, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < Lq; ++i) {
        const int64_t row = (b * Hq + h) * Lq + i;
        double dout_dot_out = 0;
        for (int64_t e = 0; e < Dv; ++e) dout_dot_out += dout[row * Dv + e] * fwd.out[row * Dv + e];
        for (int64_t j = 0; j < Lk; ++j) {
          double s = 0;
          if (!raw_score(p, b, h, i, j, s)) continue;
          const double w = fwd.weights[row * Lk + j];
          const int64_t kv_row = (b * Hkv + hk) * Lk + j;
          double dp = 0, abs_dp = 0;
          for (int64_t e = 0; e < Dv; ++e) {
            dp += dout[row * Dv + e] * p.v[kv_row * Dv + e];
            abs_dp += std::abs(dout[row * Dv + e] * p.v[kv_row * Dv + e]);
            g.dv[kv_row * Dv + e] += w * dout[row * Dv + e];
            g.dv_scale[kv_row * Dv + e] += w * std::abs(dout[row * Dv + e]);
          }
          const double dz = w * (dp - dout_dot_out);
          g.dmask[row * Lk + j] = dz;
          double ds = dz, abs_ds = w * (abs_dp + std::abs(dout_dot_out));
          g.dmask_scale[row * Lk + j] = abs_ds;
          if (p.softcap > 0) {
            const double t = std::tanh(s / p.softcap);
            ds *= 1 - t * t;
            abs_ds *= 1 - t * t;
          }
          for (int64_t d = 0; d < D; ++d) {
            g.dq[row * D + d] += p.scale * ds * p.k[kv_row * D + d];
            g.dk[kv_row * D + d] += p.scale * ds * p.q[row * D + d];
            g.dq_scale[row * D + d] += std::abs(p.scale * abs_ds * p.k[kv_row * D + d]);
            g.dk_scale[kv_row * D + d] += std::abs(p.scale * abs_ds * p.q[row * D + d]);
          }
        }
      }
    }
  return g;
}

Result attention(const Problem& p) {
  const int64_t B = p.batch, Hq = p.heads_q, Lq = p.q_len, Lk = p.kv_len, Dv = p.value_dim,
                group = p.heads_q / p.heads_kv;
  const double inf = std::numeric_limits<double>::infinity();
  Result r;
  r.out.assign(B * Hq * Lq * Dv, 0.0);
  r.lse.assign(B * Hq * Lq, -inf);
  r.weights.assign(B * Hq * Lq * Lk, 0.0);
  std::vector<double> score(Lk);
  std::vector<bool> seen(Lk);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < Lq; ++i) {
        double max_score = -inf;
        for (int64_t j = 0; j < Lk; ++j) {
          double s = 0;
          seen[j] = raw_score(p, b, h, i, j, s);
          if (!seen[j]) continue;
          if (p.softcap > 0) s = p.softcap * std::tanh(s / p.softcap);
          if (!p.mask.empty()) s += p.mask[((b * Hq + h) * Lq + i) * Lk + j];
          score[j] = s;
          max_score = std::max(max_score, s);
        }
        if (max_score == -inf) continue;  // sees nothing: out 0, lse -inf, weights 0
        double sum = 0;
        for (int64_t j = 0; j < Lk; ++j)
          if (seen[j]) sum += std::exp(score[j] - max_score);
        const int64_t row = (b * Hq + h) * Lq + i;
        r.lse[row] = max_score + std::log(sum);
        for (int64_t j = 0; j < Lk; ++j) {
          if (!seen[j]) continue;
          const double w = std::exp(score[j] - max_score) / sum;
          r.weights[row * Lk + j] = w;
          for (int64_t e = 0; e < Dv; ++e)
            r.out[row * Dv + e] += w * p.v[((b * p.heads_kv + hk) * Lk + j) * Dv + e];
        }
      }
    }
  return r;
}

}  // namespace xattn::reference
