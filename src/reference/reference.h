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
  double scale = 1.0;
  double softcap = 0.0;
};

struct Result {
  std::vector<double> out;      // [B,Hq,Lq,Dv]
  std::vector<double> lse;      // [B,Hq,Lq]
  std::vector<double> weights;  // [B,Hq,Lq,Lk]
};

Result attention(const Problem& p);

}  // namespace xattn::reference
