#pragma once
// Criss-cross attention (CCNet, Huang et al. 2019): on an H × W map, the pixel (i, j) attends to
// the H + W − 1 pixels of its row i and its column j, itself counted once, with one softmax over
// all of them:
//   out[b,i,j] = Σ_{(i',j') ∈ row(i) ∪ col(j)} softmax(scale·q[b,i,j]·k[b,i',j'])·v[b,i',j']
// It runs as two problems of the one kernel whose results merge exactly by log-sum-exp (merge()):
// each row's W pixels attend to their row, and each column's H pixels to their column without
// the centre. No H·W × H·W mask, nor any score array, ever exists.

#include <optional>

#include "xattn/attention.h"
#include "xattn/tensor.h"

namespace xattn {

struct CrissCrossParams {
  std::optional<float> scale;  // multiplies q·k; default 1/sqrt(D) (CCNet's scores are unscaled: 1)
  int num_threads = 0;         // 0: OpenMP's default; at most 4096
};

// q, k [B, H, W, D] and v [B, H, W, Dv]: channels last (a [B, C, H, W] map is the strided view
// with strides (C·H·W, W, 1, H·W), which works but reads slowly), any strides, f32/f16/bf16 (one
// dtype). outputs.out [B, H, W, Dv] (f32 or the inputs' dtype); outputs.lse [B, H, W] (f32,
// optional, the log-sum-exp over each pixel's H + W − 1 scores); outputs.weights must be absent.
// Throws xattn::Error, before writing anything, when an argument is invalid; the rules of
// attention() (empty sizes, overlaps, limits) apply.
void criss_cross_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                           const CrissCrossParams& params, const AttentionOutputs& outputs);

// Gradients given dout = ∂loss/∂out, with out and lse as criss_cross_attention returned them:
// each of the two problems' backward, run with the merged out and lse, gives exactly its keys'
// share of the gradient (the probabilities e^(s − lse) and δ = dout·out are those of the union),
// and the shares add up. grads.dq, dk, dv are shaped like q, k, v (f32 or the inputs' dtype);
// grads.dmask must be absent.
void criss_cross_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                    const TensorView& out, const TensorView& lse,
                                    const TensorView& dout, const CrissCrossParams& params,
                                    const AttentionGradients& grads);

}  // namespace xattn
