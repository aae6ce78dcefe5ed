#pragma once
// torch.nn.MultiheadAttention's forward, on the fused kernel: same constructor options, same
// forward options, same parameter names, same results (inference: no dropout).

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "xattn/nn/kv_cache.h"
#include "xattn/nn/linear.h"
#include "xattn/nn/tensor.h"
#include "xattn/tensor.h"

namespace xattn::nn {

struct MultiheadAttentionConfig {
  int64_t embed_dim = 0;
  int64_t num_heads = 1;
  int64_t kdim = 0;  // key input width; 0 means embed_dim
  int64_t vdim = 0;  // value input width; 0 means embed_dim
  bool bias = true;
  bool add_bias_kv = false;    // learned bias_k, bias_v appended as one more key and value
  bool add_zero_attn = false;  // a zero key and value appended after them
  bool batch_first = false;    // inputs and outputs [N, L, E] instead of [L, N, E]
};

// The forward options, as torch names them. Masks use torch's conventions: a bool true means
// "may NOT attend"; float values are added to the scores.
struct MultiheadAttentionOptions {
  TensorView key_padding_mask;  // [N, S] ([S] unbatched); bool or float
  TensorView attn_mask;         // [L, S] or [N·num_heads, L, S] ([num_heads, L, S] unbatched)
  bool is_causal = false;       // query i also sees only keys j <= i (torch's triu mask)
  bool need_weights = true;
  bool average_attn_weights = true;
  int num_threads = 0;  // of the attention kernel; 0: OpenMP's default
};

struct MultiheadAttentionResult {
  Tensor out;      // shaped like the query, with embed_dim values
  // need_weights: [N, L, S'] averaged over heads or [N, num_heads, L, S'] (no N unbatched),
  // S' counting the appended bias and zero keys. Empty otherwise.
  Tensor weights;
};

class MultiheadAttention {
 public:
  // Parameters start as PyTorch would draw them (from a fixed seed); load real ones with
  // load_state_dict. Throws xattn::Error for an invalid configuration.
  explicit MultiheadAttention(const MultiheadAttentionConfig& config, uint64_t seed = 0);

  const MultiheadAttentionConfig& config() const { return config_; }
  int64_t head_dim() const { return config_.embed_dim / config_.num_heads; }

  // PyTorch's state_dict names this layer has: in_proj_weight (or q_proj_weight, k_proj_weight,
  // v_proj_weight when kdim or vdim differ from embed_dim), in_proj_bias, out_proj.weight,
  // out_proj.bias, bias_k, bias_v.
  std::vector<std::string> parameter_names() const;

  // Loads every parameter from `lookup` (a name -> view function returning an absent view for a
  // missing name), validating all of them before changing any. Throws xattn::Error naming the
  // parameter that is missing or has the wrong shape.
  using ParameterLookup = std::function<TensorView(std::string_view name)>;
  void load_state_dict(const ParameterLookup& lookup);
  // From a safetensors file saved from PyTorch, under `prefix` (e.g. "decoder.layers.0.attn.").
  void load_safetensors(const std::string& path, std::string_view prefix = "");

  // query [L, N, E] ([N, L, E] batch_first, [L, E] unbatched), key [S, N, kdim], value
  // [S, N, vdim]; f32, f16 or bf16, any strides. Throws xattn::Error naming the argument.
  MultiheadAttentionResult forward(const TensorView& query, const TensorView& key,
                                   const TensorView& value,
                                   const MultiheadAttentionOptions& options = {}) const;

  // --- Decoding with projected keys and values --------------------------------------------
  // An empty cache for `batch` sequences.
  KVCache make_cache(int64_t batch, int64_t capacity = 0) const;
  // Projects key and value (laid out as in forward, N = cache.batch()) and appends them.
  void extend_cache(KVCache& cache, const TensorView& key, const TensorView& value) const;
  // forward() against the cached keys and values. The query batch may be a multiple of the
  // cache's: query rows n·beams .. n·beams + beams - 1 (beams = its batch / cache.batch()) all
  // read sequence n, with no copy. is_causal treats the query as the last L cached positions
  // (needs beams = 1). key_padding_mask is [cache batch, cache length].
  MultiheadAttentionResult forward_cached(const TensorView& query, const KVCache& cache,
                                          const MultiheadAttentionOptions& options = {}) const;

 private:
  MultiheadAttentionConfig config_;
  Linear q_proj_, k_proj_, v_proj_, out_proj_;
  Tensor bias_k_, bias_v_;  // [1, 1, embed_dim] when add_bias_kv
};

}  // namespace xattn::nn
