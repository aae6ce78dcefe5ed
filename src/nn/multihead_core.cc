// Multi-head attention between the projections, for MultiheadAttention's forward and cached
// forward alike.

#include "nn/multihead_core.h"

#include <algorithm>
#include <cmath>

#include "nn/heads.h"
#include "xattn/attention.h"

namespace xattn::nn {
namespace {

// Torch's attn_output_weights: the kernel's [N, H, beams·L, S] weights (and [.., e] for the
// appended keys) renormalised to the union of keys, per query sequence b = n·beams + k, then
// averaged over heads if asked.
Tensor torch_weights(const Tensor& main, const Tensor& extra, int64_t e, const Tensor& lse_main,
                     const Tensor& lse_extra, const Tensor& lse_all, const MaskGeometry& g,
                     bool average) {
  const int64_t N = g.batch, H = g.num_heads, L = g.q_len, S = g.kv_len, R = g.beams * L;
  const int64_t cols = S + e, NB = N * g.beams;
  std::vector<int64_t> shape;
  if (g.batched) shape.push_back(NB);
  if (!average) shape.push_back(H);
  shape.insert(shape.end(), {L, cols});
  Tensor w(shape);
  const auto rescale = [&](const Tensor& lse, int64_t i) {
    const float all = lse_all.data()[i];
    return all == -__builtin_inff() ? 0.0f : std::exp(lse.data()[i] - all);
  };
  const float share = average ? 1.0f / static_cast<float>(H) : 1.0f;
  for (int64_t b = 0; b < NB; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t l = 0; l < L; ++l) {
        const int64_t n = b / g.beams, r = (b % g.beams) * L + l, i = (n * H + h) * R + r;
        float* dst = w.data() + ((average ? b * L : (b * H + h) * L) + l) * cols;
        const float sm = e ? rescale(lse_main, i) * share : share;
        for (int64_t s = 0; s < S; ++s) dst[s] += sm * main.data()[i * S + s];
        if (e) {
          const float sx = rescale(lse_extra, i) * share;
          for (int64_t j = 0; j < e; ++j) dst[S + j] += sx * extra.data()[i * e + j];
        }
      }
  return w;
}

}  // namespace

MultiheadAttentionResult attend_heads(const ProjectedHeads& in, const MaskGeometry& g,
                                      CausalAlign align, const MultiheadAttentionOptions& options,
                                      const MultiheadLayer& layer) {
  const int64_t N = g.batch, H = g.num_heads, hd = in.q.size(3), E = H * hd;
  const int64_t L = g.q_len, R = g.beams * L, NB = N * g.beams;
  KernelMask mask;
  plan_masks(options.key_padding_mask, options.attn_mask, g, mask);
  AttentionParams p;
  p.kv_lens = mask.kv_lens;
  p.mask = mask.view;
  p.causal = options.is_causal;
  p.align = align;
  p.num_threads = options.num_threads;

  const int64_t extras = (layer.bias_k.empty() ? 0 : 1) + (layer.add_zero_attn ? 1 : 0);
  Tensor heads_out_rows({NB, L, E}), lse, weights;
  if (extras) lse = Tensor({N, H, R});
  if (options.need_weights) weights = Tensor({N, H, R, g.kv_len});
  const MutableTensorView out = heads(heads_out_rows.data(), N, H, R, hd);
  // Empty problems skip the kernel: with no rows there is nothing to compute, and with no keys
  // every row sees none, which the zero-filled outputs and an lse of -inf already say.
  const bool rows = N * R > 0, keys = g.kv_len > 0;
  if (rows && keys)
    attention(in.q, in.k, in.v, p, {out, extras ? lse.view() : MutableTensorView{}, weights.view()});
  else if (extras)
    std::fill(lse.data(), lse.data() + lse.numel(), -__builtin_inff());

  Tensor extra_weights, extra_lse, all_lse;
  if (extras && rows) {
    // The appended keys: bias_k (if any) then a zero key, the same for every sequence.
    Tensor keys({extras, E}), values({extras, E});
    if (!layer.bias_k.empty()) {
      std::copy_n(layer.bias_k.data(), E, keys.data());
      std::copy_n(layer.bias_v.data(), E, values.data());
    }
    const auto shared = [&](const Tensor& t) {
      return TensorView{t.data(), DType::kF32,
                        Layout::strided({N, H, extras, hd}, {0, hd, E, 1})};
    };
    AttentionParams px;
    px.num_threads = options.num_threads;
    Tensor extra_out({N, H, R, hd});
    extra_lse = Tensor({N, H, R});
    all_lse = Tensor({N, H, R});
    if (options.need_weights) extra_weights = Tensor({N, H, R, extras});
    attention(in.q, shared(keys), shared(values), px,
              {extra_out.view(), extra_lse.view(), extra_weights.view()});
    merge(out, lse.view(), extra_out.view(), extra_lse.view(), out, all_lse.view());
  }

  MultiheadAttentionResult result;
  if (options.need_weights)
    result.weights = torch_weights(weights, extra_weights, extras, lse, extra_lse, all_lse, g,
                                   options.average_attn_weights);
  // The output projection over rows [N·beams][L], then torch's layout.
  const bool seq_first = g.batched && !layer.batch_first;
  Tensor projected(g.batched ? std::vector<int64_t>{NB, L, E} : std::vector<int64_t>{L, E});
  layer.out_proj.forward({heads_out_rows.data(), NB * L, E, E}, {projected.data(), NB * L, E, E});
  if (!seq_first) {
    result.out = std::move(projected);
    return result;
  }
  result.out = Tensor({L, NB, E});
  for (int64_t b = 0; b < NB; ++b)
    for (int64_t l = 0; l < L; ++l)
      std::copy_n(projected.data() + (b * L + l) * E, E, result.out.data() + (l * NB + b) * E);
  return result;
}

}  // namespace xattn::nn
