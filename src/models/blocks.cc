// The shared transformer pieces; each attention is one kernel call on views of the projections.

#include "xattn/models/blocks.h"

#include "models/tensor_ops.h"
#include "nn/heads.h"
#include "xattn/attention.h"
#include "xattn/error.h"

namespace xattn::models {
namespace {

void load_linear(nn::Linear& layer, const Parameters& p) {
  layer.load(p["weight"], p["bias"], p.scope());
}
void load_norm(nn::LayerNorm& layer, const Parameters& p) {
  layer.load(p["weight"], p["bias"], p.scope());
}

}  // namespace

Mlp::Mlp(int64_t dim, int64_t hidden) : fc1_(dim, hidden), fc2_(hidden, dim) {}

void Mlp::load(const Parameters& p) {
  load_linear(fc1_, p.under("fc1."));
  load_linear(fc2_, p.under("fc2."));
}

Tensor Mlp::forward(const Tensor& x) const {
  Tensor h = apply(fc1_, x);
  gelu_inplace(h);
  return apply(fc2_, h);
}

SelfAttention::SelfAttention(int64_t dim, int64_t num_heads, bool qkv_bias)
    : heads_(num_heads), qkv_(dim, 3 * dim, qkv_bias), proj_(dim, dim) {
  if (num_heads < 1 || dim % num_heads != 0)
    throw Error("num_heads: " + std::to_string(num_heads) + " heads must divide the width " +
                std::to_string(dim));
}

void SelfAttention::load(const Parameters& p) {
  load_linear(qkv_, p.under("qkv."));
  load_linear(proj_, p.under("proj."));
}

Tensor SelfAttention::forward(const Tensor& x) const {
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2), H = heads_, D = C / H;
  // qkv [B, L, 3, H, D]: q, k and v are [B, H, L, D] views with row stride 3·C.
  const Tensor qkv = apply(qkv_, x);
  const auto part = [&](int i) {
    return TensorView{qkv.data() + i * C, DType::kF32,
                      Layout::strided({B, H, L, D}, {L * 3 * C, D, 3 * C, 1})};
  };
  Tensor a({B, L, C});
  attention(part(0), part(1), part(2), {}, {nn::heads(a.data(), B, H, L, D)});
  return apply(proj_, a);
}

Block::Block(int64_t dim, int64_t num_heads, double mlp_ratio, bool qkv_bias, float eps)
    : norm1_(dim, eps), norm2_(dim, eps), attn_(dim, num_heads, qkv_bias),
      mlp_(dim, static_cast<int64_t>(static_cast<double>(dim) * mlp_ratio)) {}

void Block::load(const Parameters& p) {
  load_norm(norm1_, p.under("norm1."));
  attn_.load(p.under("attn."));
  load_norm(norm2_, p.under("norm2."));
  mlp_.load(p.under("mlp."));
}

void Block::forward(Tensor& x) const {
  add_into(x, attn_.forward(apply(norm1_, x)));
  add_into(x, mlp_.forward(apply(norm2_, x)));
}

namespace {

nn::AttentionConfig cross_attention_config(int64_t q_dim, int64_t kv_dim, int64_t heads) {
  nn::AttentionConfig c;
  c.input_widths = {q_dim, kv_dim};
  c.query_input = 0;
  c.key_input = c.value_input = 1;
  c.num_heads = heads;
  return c;  // q, k, v and out projections all q_dim wide, with biases, scaled scores
}

}  // namespace

CrossAttentionBlock::CrossAttentionBlock(int64_t q_dim, int64_t kv_dim, int64_t num_heads,
                                         double mlp_ratio, float eps)
    : norm_q_(q_dim, eps), norm_kv_(kv_dim, eps), norm2_(q_dim, eps),
      attn_(cross_attention_config(q_dim, kv_dim, num_heads)),
      mlp_(q_dim, static_cast<int64_t>(static_cast<double>(q_dim) * mlp_ratio)) {}

void CrossAttentionBlock::load(const Parameters& p) {
  load_norm(norm_q_, p.under("norm_q."));
  load_norm(norm_kv_, p.under("norm_kv."));
  const Parameters attn = p.under("attn.");
  try {
    attn_.load_state_dict(attn.lookup());
  } catch (const Error& e) {  // its messages name the tensors without our prefix
    throw Error(attn.scope() + ": " + e.what());
  }
  load_norm(norm2_, p.under("norm2."));
  mlp_.load(p.under("mlp."));
}

void CrossAttentionBlock::forward(Tensor& x, const TensorView& context,
                                  std::span<const int64_t> kv_lens) const {
  const Tensor q = apply(norm_q_, x), kv = norm_kv_(context);
  AttentionParams params;
  params.kv_lens = kv_lens;
  const TensorView inputs[] = {q.view(), kv.view()};
  add_into(x, attn_.forward(inputs, params));
  add_into(x, mlp_.forward(apply(norm2_, x)));
}

Projection::Projection(int64_t in_dim, int64_t out_dim, float eps)
    : norm_(in_dim, eps), linear_(in_dim, out_dim) {}

void Projection::load(const Parameters& p) {
  load_norm(norm_, p.under("0."));
  load_linear(linear_, p.under("2."));
}

Tensor Projection::forward(const Tensor& x) const {
  Tensor h = apply(norm_, x);
  gelu_inplace(h);
  return apply(linear_, h);
}

}  // namespace xattn::models
