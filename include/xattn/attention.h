#pragma once
// The fused attention forward: out = softmax(scale·Q·Kᵀ + M)·V, one pass, f32 accumulation.

#include <cstdint>
#include <span>

#include "xattn/params.h"
#include "xattn/tensor.h"

namespace xattn {

// Outputs of one call. `out` is required; `lse` and `weights` are computed only when present.
//   dense:  out [B, Hq, Lq, Dv]     lse [B, Hq, Lq] (f32)   weights [B, Hq, Lq, Lk]
//   varlen: out [Tq, Hq, Dv]        lse [Hq, Tq]   (f32)   weights [Hq, Tq, max_k]
// `out` and `weights` are f32 or the inputs' dtype. A row that sees no key gets out = 0,
// lse = -inf and weights = 0.
struct AttentionOutputs {
  MutableTensorView out{};
  MutableTensorView lse{};
  MutableTensorView weights{};
  // out and lse already hold a result over other keys (an earlier call's, or out = 0 and
  // lse = -inf for none): this call's keys are merged into it by log-sum-exp as each row is
  // stored, which is merge() without its pass over memory or a second output. Needs lse; no
  // weights. A 16-bit out carries its rounding into the merge, so keep partial results in f32.
  bool accumulate = false;
};

// Q [B, Hq, Lq, D], K [B, Hkv, Lk, D], V [B, Hkv, Lk, Dv], any strides, f32/f16/bf16 (one dtype
// for all three). Hq must be a multiple of Hkv: query head h reads kv head h / (Hq / Hkv).
// Throws xattn::Error, before writing anything, when an argument is invalid.
//
// Rules shared by every entry point here (docs/robustness.md lists them all, with their tests):
// - Empty problems: the counts B, Hq, Hkv (zero only with Hq = 0), Lq and Lk may be 0, and give
//   the natural result: nothing to write, or with Lk = 0 rows that see no key (out 0, lse -inf);
//   gradients of inputs that meet no partner are 0. The feature widths D and Dv must be >= 1.
//   An empty view still needs non-null data (null means "absent").
// - Outputs must not share memory with the inputs, with each other, or with themselves (a zero
//   stride, or strides that step into each other); address ranges are compared.
// - Sizes are checked before use: sizes whose element count or address range overflows 2^62,
//   and calls whose working memory (scratch, per-row statistics) could never fit in the
//   machine's memory, are refused as xattn::Error before anything is allocated. An allocation
//   that fails anyway (an address-space limit, say) is an xattn::Error too ("out of memory"),
//   and may leave the outputs partly written.
// - Numerics: scores (scale·q·k, after softcap and mask) are f32. Any finite score works, e.g.
//   offsets of 1e6 cancel exactly against the row maximum; one beyond f32's range is ±inf, and a
//   +inf score makes its row NaN (inf - inf), as IEEE says. A result too large for a 16-bit
//   output dtype (a gradient, say) is ±inf, as any rounding to that dtype gives; out itself is a
//   convex combination of V's rows and cannot overflow.
void attention(const TensorView& q, const TensorView& k, const TensorView& v,
               const AttentionParams& params, const AttentionOutputs& outputs);

// Throws the xattn::Error that attention() would throw for these arguments, or returns; computes
// and writes nothing. For callers that must know all is well before they commit to a step that
// cannot be undone, e.g. xattn::dist, whose processes agree on it before exchanging data.
void validate_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                        const AttentionParams& params, const AttentionOutputs& outputs);

// Packed ragged batches (FlashAttention's varlen convention): Q [Tq, Hq, D], K [Tk, Hkv, D],
// V [Tk, Hkv, Dv]; sequence b owns rows cu_seqlens_q[b] .. cu_seqlens_q[b+1] of Q (likewise K/V).
// Both offset arrays have B+1 >= 1 entries, start at 0 and never decrease. A dense mask broadcasts to
// [B, Hq, max_q, max_k] and is indexed by positions within each sequence. params.kv_lens and
// params.q_lens must be empty: the offsets give the lengths.
void attention_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                      std::span<const int64_t> cu_seqlens_q, std::span<const int64_t> cu_seqlens_k,
                      const AttentionParams& params, const AttentionOutputs& outputs);

// Gradients of a loss with respect to Q, K and V, given dout = ∂loss/∂out. The probabilities are
// recomputed tile by tile from the forward's lse (FlashAttention's backward), so memory stays
// linear in the sequence lengths. Deterministic for a given thread count; no atomics.
struct AttentionGradients {
  MutableTensorView dq{}, dk{}, dv{};  // shaped like q, k, v; f32 or the inputs' dtype
  // Optional: the gradient of a float params.mask (a learned bias), shaped like the mask, f32 or
  // the mask's dtype. Broadcast dims sum their contributions; masked (-inf) entries get 0.
  MutableTensorView dmask{};
};

// q, k, v and params as given to attention(); out [B, Hq, Lq, Dv] and lse [B, Hq, Lq] (f32) as it
// returned them; dout shaped like out (f32 or the inputs' dtype). dq, dk and dv are required.
// Rows that see no key, and keys no row sees, get zero gradients. Throws xattn::Error, before
// writing anything, when an argument is invalid. The recomputed probabilities e^(z - lse) carry
// the f32 rounding of z and lse, about |lse|·2^-23 relative; they are capped at 1, so gradients
// stay finite even for scores near 1e30.
void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout,
                        const AttentionParams& params, const AttentionGradients& grads);

// Throws the xattn::Error that attention_backward() would throw for these arguments, or returns;
// computes and writes nothing (as validate_attention, for xattn::dist's collective checks).
void validate_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                 const TensorView& out, const TensorView& lse,
                                 const TensorView& dout, const AttentionParams& params,
                                 const AttentionGradients& grads);

// attention_backward for attention_varlen's packed layout: out [Tq, Hq, Dv] and lse [Hq, Tq] as
// attention_varlen returned them, dout like out, dq, dk, dv like q, k, v.
void attention_varlen_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                               std::span<const int64_t> cu_seqlens_q,
                               std::span<const int64_t> cu_seqlens_k, const TensorView& out,
                               const TensorView& lse, const TensorView& dout,
                               const AttentionParams& params, const AttentionGradients& grads);

// Combines two partial results computed over disjoint key sets into the result over their
// union: out = (e^(lse_a-m)·out_a + e^(lse_b-m)·out_b) / (e^(lse_a-m) + e^(lse_b-m)), m = max.
// out_* are [..., L, Dv] (rank 1-4, f32/f16/bf16), lse_* the same shape without Dv (f32).
// `out` and `lse` may be inputs exactly (same data and strides: each element is read before it
// is written), but must not otherwise overlap them or each other. Any size may be 0.
void merge(const TensorView& out_a, const TensorView& lse_a, const TensorView& out_b,
           const TensorView& lse_b, const MutableTensorView& out, const MutableTensorView& lse);

}  // namespace xattn
