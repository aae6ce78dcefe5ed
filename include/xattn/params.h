#pragma once
// Everything that chooses which keys a query sees and how a score is transformed.

#include <cstdint>
#include <optional>
#include <span>

#include "xattn/tensor.h"

namespace xattn {

// Where the causal diagonal (and the window's centre) p sits for query row i of batch b:
//   kTopLeft:     p = i + diagonal_offset
//   kBottomRight: p = i + kv_len_b - q_len_b + diagonal_offset
//                 (with offset 0, the last valid query sees the last valid key)
enum class CausalAlign : uint8_t { kTopLeft, kBottomRight };

// Keys j with p - left <= j <= p + right are visible; -1 leaves that side unbounded, as does any
// width of Lq + Lk + |diagonal_offset| or more (INT64_MAX included).
struct Window {
  int64_t left = -1;
  int64_t right = -1;
};

struct AttentionParams {
  std::optional<float> scale;  // multiplies Q·Kᵀ; default 1/sqrt(D)
  float softcap = 0.0f;        // > 0: s -> softcap·tanh(s/softcap), after scale, before masks
                               // (at least 1/FLT_MAX, so that 1/softcap is finite)
  bool causal = false;         // key j visible iff j <= p
  CausalAlign align = CausalAlign::kTopLeft;
  Window window;
  // Shifts the diagonal p (above) by this many keys, so that a call over part of a longer
  // sequence sees what the whole call would: for queries that start at global row r and keys
  // that start at global key o of a top-left problem, pass r - o (split-KV across processes,
  // ring attention). Lengths stay local: kv_lens and q_lens count this call's keys and rows,
  // so a shard of a bottom-right problem passes kTopLeft and r - o + (kv_len_b - q_len_b) of
  // the whole sequence.
  // |diagonal_offset| + Lq + Lk must be at most 2^61; a width of that sum or more is unbounded.
  int64_t diagonal_offset = 0;

  // Per-batch valid lengths (dense batches only): keys j >= kv_lens[b] are invisible and rows
  // i >= q_lens[b] output zeros. Empty spans mean "the full length".
  std::span<const int64_t> kv_lens;
  std::span<const int64_t> q_lens;

  // Optional dense mask that broadcasts (right-aligned, size-1 or stride-0 dims) to
  // [B, Hq, Lq, Lk]. Bool: true = may attend. f32/f16/bf16: added to the score (-inf = masked).
  TensorView mask;

  // Lets bf16 inputs round the probabilities to bf16 before they weight V, as FlashAttention
  // and PyTorch's CPU kernel do; with AVX-512 BF16, P·V then runs at twice the f32 rate. It
  // adds at most 2⁻⁹·Σ_j p_j·|v_j| ≤ 2⁻⁹·max|V| to an output element. Off by default: every
  // dtype then gets f32 arithmetic throughout. Other dtypes ignore it.
  bool bf16_probabilities = false;

  int num_threads = 0;  // 0: OpenMP's default; at most 4096
};

}  // namespace xattn
