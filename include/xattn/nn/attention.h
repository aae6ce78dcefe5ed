#pragma once
// A generic attention layer whose queries, keys and values each come from any of its input
// sequences: self-attention (all from one), cross-attention (Q from A; K, V from B), SelfDoc's
// cross-modal routing (Q, V from A; K from B), or any other choice. The result can be added back
// to the query's input through a learned γ (DANet, DRANet, CCNet: out = x + γ·attn, γ = 0 at
// start), scaled by γ alone, or returned as it is; the scores can be left unscaled (DANet, CCNet
// use softmax(Q·Kᵀ) without 1/√D).

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "xattn/nn/linear.h"
#include "xattn/nn/tensor.h"
#include "xattn/params.h"
#include "xattn/tensor.h"

namespace xattn::nn {

enum class Residual : uint8_t {
  kNone,      // out = attn
  kAddGamma,  // out = x_query + γ·attn  (needs out width = query input width)
  kScaleGamma,  // out = γ·attn
};

struct AttentionConfig {
  std::vector<int64_t> input_widths;  // the widths of the input sequences, by index
  int query_input = 0;                // which input the queries, keys and values come from
  int key_input = 0;
  int value_input = 0;
  int64_t num_heads = 1;
  int64_t qk_dim = 0;  // the Q and K projection width, num_heads · D; 0: the query input's width
  int64_t v_dim = 0;   // the V projection width, num_heads · Dv; 0: the query input's width
  bool bias = true;
  // An output projection v_dim -> query input width. Without it the heads' concatenation is the
  // output (DANet adds it to the input directly).
  bool out_proj = true;
  bool scaled = true;  // scores · 1/√D; false: softmax(Q·Kᵀ)
  Residual residual = Residual::kNone;
};

class Attention {
 public:
  // Parameters start as PyTorch would draw them (from a fixed seed), γ at 0.
  explicit Attention(const AttentionConfig& config, uint64_t seed = 0);

  const AttentionConfig& config() const { return config_; }

  // Names: q_proj.weight, q_proj.bias, k_proj.*, v_proj.*, out_proj.* (as present), gamma [1].
  std::vector<std::string> parameter_names() const;
  using ParameterLookup = std::function<TensorView(std::string_view name)>;
  // All parameters are validated before any changes; errors name the parameter.
  void load_state_dict(const ParameterLookup& lookup);

  // inputs[i] is [N, L_i, input_widths[i]] (batch first; any float dtype and strides). `params`
  // carries masks, causality, windows and lengths for the kernel call, its mask broadcasting to
  // [N, num_heads, L_query, L_key]; its scale must be unset (the config decides it). Returns
  // [N, L_query, out width] in f32.
  Tensor forward(std::span<const TensorView> inputs, const AttentionParams& params = {}) const;

 private:
  int64_t out_width() const;

  AttentionConfig config_;
  Linear q_proj_, k_proj_, v_proj_, out_proj_;
  float gamma_ = 0.0f;
};

}  // namespace xattn::nn
