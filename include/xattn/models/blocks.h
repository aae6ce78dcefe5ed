#pragma once
// The transformer pieces the architectures share, for inference: the C++ twins of
// python/xattn/models/_blocks.py, with the same parameter names. Token sequences are owned
// batch-major tensors [B, L, width]; every attention is one kernel call on views of them.

#include <cstdint>
#include <span>

#include "xattn/models/parameters.h"
#include "xattn/nn/attention.h"
#include "xattn/nn/layer_norm.h"
#include "xattn/nn/linear.h"
#include "xattn/nn/tensor.h"

namespace xattn::models {

using nn::Tensor;

// fc2(gelu(fc1(x))), timm's Mlp.
class Mlp {
 public:
  Mlp() = default;
  Mlp(int64_t dim, int64_t hidden);
  void load(const Parameters& p);  // fc1.*, fc2.*
  Tensor forward(const Tensor& x) const;

 private:
  nn::Linear fc1_, fc2_;
};

// timm's ViT attention: proj(concat_h softmax(q_h·k_hᵀ/√D)·v_h) with q, k, v from one qkv
// projection, read by the kernel as strided views of it.
class SelfAttention {
 public:
  SelfAttention() = default;
  SelfAttention(int64_t dim, int64_t num_heads, bool qkv_bias);
  void load(const Parameters& p);  // qkv.*, proj.*
  Tensor forward(const Tensor& x) const;

 private:
  int64_t heads_ = 1;
  nn::Linear qkv_, proj_;
};

// Pre-LayerNorm transformer block: x += attn(norm1(x)); x += mlp(norm2(x)).
class Block {
 public:
  Block() = default;
  Block(int64_t dim, int64_t num_heads, double mlp_ratio, bool qkv_bias, float eps);
  void load(const Parameters& p);  // norm1.*, attn.*, norm2.*, mlp.*
  void forward(Tensor& x) const;

 private:
  nn::LayerNorm norm1_, norm2_;
  SelfAttention attn_;
  Mlp mlp_;
};

// Perceiver's cross-attention block: x += attn(norm_q(x), norm_kv(context)); x += mlp(norm2(x)),
// the attention an nn::Attention (q_proj, k_proj, v_proj, out_proj; all q_dim wide).
class CrossAttentionBlock {
 public:
  CrossAttentionBlock(int64_t q_dim, int64_t kv_dim, int64_t num_heads, double mlp_ratio, float eps);
  void load(const Parameters& p);  // norm_q.*, norm_kv.*, attn.*, norm2.*, mlp.*
  // x [B, L, q_dim], context [B, S, kv_dim] (any float dtype and strides, checked by the
  // caller); keys at positions >= kv_lens[b] are invisible to batch row b (empty: all visible).
  void forward(Tensor& x, const TensorView& context, std::span<const int64_t> kv_lens = {}) const;

 private:
  nn::LayerNorm norm_q_, norm_kv_, norm2_;
  nn::Attention attn_;
  Mlp mlp_;
};

// CrossViT's change of width: Linear(gelu(LayerNorm(x))) (timm's projs, names 0.* and 2.*).
class Projection {
 public:
  Projection() = default;
  Projection(int64_t in_dim, int64_t out_dim, float eps);
  void load(const Parameters& p);
  Tensor forward(const Tensor& x) const;

 private:
  nn::LayerNorm norm_;
  nn::Linear linear_;
};

}  // namespace xattn::models
