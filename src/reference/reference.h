#pragma once
// The float64 oracle: every feature of the forward, written as directly from the definitions as
// possible, one (query, key) pair at a time. Slow, obvious, and trusted. It shares no code with
// the kernels or with core's visibility logic.

#include <cstdint>
#include <vector>

namespace xattn::reference {

struct Problem {
  int64_t batch = 1, heads_q = 1, heads_kv = 1, q_len = 1, kv_len = 1, head_dim = 1,
          value_dim = 1;
  // Dense, row-major: q [B,Hq,Lq,D], k [B,Hkv,Lk,D], v [B,Hkv,Lk,Dv].
  std::vector<double> q, k, v;
  // Optional additive mask, dense [B,Hq,Lq,Lk]; -inf = masked (a bool mask's false). Empty: none.
  std::vector<double> mask;
  std::vector<int64_t> kv_lens, q_lens;  // empty: full lengths
  bool causal = false;
  bool bottom_right = false;
  int64_t window_left = -1, window_right = -1;
  int64_t diagonal_offset = 0;  // added to the diagonal, as AttentionParams::diagonal_offset
  double scale = 1.0;
  double softcap = 0.0;
};

struct Result {
  std::vector<double> out;      // [B,Hq,Lq,Dv]
  std::vector<double> lse;      // [B,Hq,Lq]
  std::vector<double> weights;  // [B,Hq,Lq,Lk]
};

Result attention(const Problem& p);

// Gradients of L = Σ dout ⊙ out with respect to the inputs, from the definitions:
//   dv_j = Σ_i w_ij·dout_i,  dz_ij = w_ij·(dout_i·v_j − dout_i·out_i),  dmask_ij = dz_ij,
//   ds_ij = dz_ij·(1 − tanh²(s_ij/softcap)) (softcap) or dz_ij,  dq_i = scale·Σ_j ds_ij·k_j,
//   dk_j = scale·Σ_i ds_ij·q_i   (GQA: dk, dv sum over the query heads of a group).
// Invisible and masked pairs contribute nothing. dmask is dense [B,Hq,Lq,Lk].
// The *_scale vectors are the same sums over absolute values of the terms (with |dp| + |delta|
// for dp − delta): what the rounding error of an f32 computation of each gradient scales with,
// since dp − delta cancels (to 0 when a row sees one key).
struct Gradients {
  std::vector<double> dq, dk, dv, dmask;
  std::vector<double> dq_scale, dk_scale, dv_scale, dmask_scale;
};

Gradients attention_backward(const Problem& p, const std::vector<double>& dout);

}  // namespace xattn::reference
