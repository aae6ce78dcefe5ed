// torch.nn.MultiheadAttention on the fused kernel:
//   q, k, v = query·W_qᵀ + b_q, key·W_kᵀ + b_k, value·W_vᵀ + b_v       (BLAS, all rows at once)
//   o_h     = softmax(q_h·k_hᵀ/√hd + mask)·v_h for every head h          (one kernel call)
//   out     = concat_h(o_h)·W_oᵀ + b_o                                  (BLAS)
// Internally every sequence batch is batch-major, [N, L, E] rows, so the heads are strided
// views of the projections and the kernel writes its output straight into the rows the output
// projection reads. Torch's appended bias and zero keys, visible to every query, go through a
// second kernel call over just those keys, merged by log-sum-exp: the big K and V stay views.

#include "xattn/nn/multihead_attention.h"

#include <cmath>
#include <string>
#include <utility>

#include "nn/heads.h"
#include "nn/multihead_core.h"
#include "nn/shapes.h"
#include "xattn/attention.h"
#include "xattn/error.h"
#include "xattn/safetensors.h"

namespace xattn::nn {
namespace {

std::string str(int64_t x) { return std::to_string(x); }

// Rows begin .. begin+count of a [rows, ...] view.
TensorView row_slice(const TensorView& x, int64_t begin, int64_t count) {
  TensorView s = x;
  s.data = static_cast<const char*>(x.data) + begin * x.stride(0) * dtype_size(x.dtype);
  s.layout.shape[0] = count;
  return s;
}

}  // namespace

MultiheadAttention::MultiheadAttention(const MultiheadAttentionConfig& config, uint64_t seed)
    : config_(config) {
  MultiheadAttentionConfig& c = config_;
  if (c.kdim == 0) c.kdim = c.embed_dim;
  if (c.vdim == 0) c.vdim = c.embed_dim;
  if (c.embed_dim < 1 || c.num_heads < 1 || c.kdim < 1 || c.vdim < 1)
    throw Error("MultiheadAttention: embed_dim, num_heads, kdim and vdim must be >= 1, got " +
                str(c.embed_dim) + ", " + str(c.num_heads) + ", " + str(c.kdim) + ", " +
                str(c.vdim));
  if (c.embed_dim % c.num_heads != 0)
    throw Error("MultiheadAttention: embed_dim " + str(c.embed_dim) +
                " is not divisible by num_heads " + str(c.num_heads));
  const int64_t E = c.embed_dim;
  q_proj_ = Linear(E, E, c.bias, seed);
  k_proj_ = Linear(c.kdim, E, c.bias, seed + 1);
  v_proj_ = Linear(c.vdim, E, c.bias, seed + 2);
  out_proj_ = Linear(E, E, c.bias, seed + 3);
  if (c.add_bias_kv) {
    // torch draws them from xavier_normal; any fixed values do until real ones are loaded.
    bias_k_ = Tensor({1, 1, E});
    bias_v_ = Tensor({1, 1, E});
  }
}

std::vector<std::string> MultiheadAttention::parameter_names() const {
  const MultiheadAttentionConfig& c = config_;
  std::vector<std::string> names;
  if (c.kdim == c.embed_dim && c.vdim == c.embed_dim) {
    names.push_back("in_proj_weight");
  } else {
    names.insert(names.end(), {"q_proj_weight", "k_proj_weight", "v_proj_weight"});
  }
  if (c.bias) names.push_back("in_proj_bias");
  names.push_back("out_proj.weight");
  if (c.bias) names.push_back("out_proj.bias");
  if (c.add_bias_kv) names.insert(names.end(), {"bias_k", "bias_v"});
  return names;
}

void MultiheadAttention::load_state_dict(const ParameterLookup& lookup) {
  const int64_t E = config_.embed_dim;
  const auto get = [&](const std::string& name) {
    const TensorView v = lookup(name);
    if (!v.present()) throw Error("state_dict: missing '" + name + "'");
    return v;
  };
  // Loaded into a copy first: a failure leaves this layer as it was.
  MultiheadAttention next = *this;
  TensorView bias[3];
  if (config_.bias) {
    const TensorView b = get("in_proj_bias");
    expect_shape(b, {3 * E}, "in_proj_bias");
    for (int i = 0; i < 3; ++i) bias[i] = row_slice(b, i * E, E);
  }
  Linear* projections[3] = {&next.q_proj_, &next.k_proj_, &next.v_proj_};
  if (config_.kdim == E && config_.vdim == E) {
    const TensorView w = get("in_proj_weight");
    expect_shape(w, {3 * E, E}, "in_proj_weight");
    for (int i = 0; i < 3; ++i) projections[i]->load(row_slice(w, i * E, E), bias[i], "in_proj");
  } else {
    const char* names[3] = {"q_proj_weight", "k_proj_weight", "v_proj_weight"};
    for (int i = 0; i < 3; ++i) projections[i]->load(get(names[i]), bias[i], names[i]);
  }
  next.out_proj_.load(get("out_proj.weight"),
                      config_.bias ? get("out_proj.bias") : TensorView{}, "out_proj");
  if (config_.add_bias_kv) {
    copy_into(get("bias_k"), next.bias_k_, "bias_k");
    copy_into(get("bias_v"), next.bias_v_, "bias_v");
  }
  *this = std::move(next);
}

void MultiheadAttention::load_safetensors(const std::string& path, std::string_view prefix) {
  const SafetensorsFile file(path);
  try {
    load_state_dict([&](std::string_view name) {
      const std::string full = std::string(prefix) + std::string(name);
      return file.contains(full) ? file.tensor(full) : TensorView{};
    });
  } catch (const Error& e) {
    throw Error(path + " (prefix '" + std::string(prefix) + "'): " + e.what());
  }
}

MultiheadAttentionResult MultiheadAttention::forward(const TensorView& query, const TensorView& key,
                                                     const TensorView& value,
                                                     const MultiheadAttentionOptions& options) const {
  const MultiheadAttentionConfig& c = config_;
  if (!query.present()) throw Error("query: is required");
  if (query.rank() != 2 && query.rank() != 3)
    throw Error("query: expected rank 3 ([L, N, E] or batch_first [N, L, E]) or 2 (unbatched "
                "[L, E]), got rank " + str(query.rank()));
  const bool batched = query.rank() == 3;
  const TensorView q = batch_major(query, "query", batched, c.batch_first, c.embed_dim);
  const TensorView k = batch_major(key, "key", batched, c.batch_first, c.kdim);
  const TensorView v = batch_major(value, "value", batched, c.batch_first, c.vdim);
  const int64_t N = q.size(0), L = q.size(1), S = k.size(1);
  if (k.size(0) != N || v.size(0) != N)
    throw Error("key, value: batch must equal the query's " + str(N) + ", got " + str(k.size(0)) +
                " and " + str(v.size(0)));
  if (v.size(1) != S)
    throw Error("value: source length must equal the key's " + str(S) + ", got " + str(v.size(1)));

  const Tensor qp = project(q_proj_, q), kp = project(k_proj_, k), vp = project(v_proj_, v);
  const int64_t H = c.num_heads, hd = head_dim();
  const ProjectedHeads in{heads(qp.data(), N, H, L, hd), heads(kp.data(), N, H, S, hd),
                          heads(vp.data(), N, H, S, hd)};
  return attend_heads(in, {N, H, 1, L, S, batched}, CausalAlign::kTopLeft, options,
                      {out_proj_, bias_k_, bias_v_, c.add_zero_attn, c.batch_first});
}

KVCache MultiheadAttention::make_cache(int64_t batch, int64_t capacity) const {
  return KVCache(batch, config_.num_heads, head_dim(), capacity);
}

void MultiheadAttention::extend_cache(KVCache& cache, const TensorView& key,
                                      const TensorView& value) const {
  const MultiheadAttentionConfig& c = config_;
  if (cache.num_heads() != c.num_heads || cache.head_dim() != head_dim())
    throw Error("cache: made for " + str(cache.num_heads()) + " heads of " + str(cache.head_dim()) +
                ", this layer has " + str(c.num_heads) + " of " + str(head_dim()));
  if (!key.present() || (key.rank() != 2 && key.rank() != 3))
    throw Error("key: expected rank 3 ([S, N, kdim] or batch_first [N, S, kdim]) or 2 ([S, kdim])");
  const bool batched = key.rank() == 3;
  const TensorView k = batch_major(key, "key", batched, c.batch_first, c.kdim);
  const TensorView v = batch_major(value, "value", batched, c.batch_first, c.vdim);
  if (k.size(0) != cache.batch() || v.size(0) != cache.batch() || v.size(1) != k.size(1))
    throw Error("key, value: expected batch " + str(cache.batch()) + " and equal lengths, got " +
                "batch " + str(k.size(0)) + " and " + str(v.size(0)) + ", lengths " +
                str(k.size(1)) + " and " + str(v.size(1)));
  const Tensor kp = project(k_proj_, k), vp = project(v_proj_, v);
  cache.append(kp.data(), vp.data(), k.size(1));
}

MultiheadAttentionResult MultiheadAttention::forward_cached(
    const TensorView& query, const KVCache& cache, const MultiheadAttentionOptions& options) const {
  const MultiheadAttentionConfig& c = config_;
  if (cache.num_heads() != c.num_heads || cache.head_dim() != head_dim())
    throw Error("cache: made for " + str(cache.num_heads()) + " heads of " + str(cache.head_dim()) +
                ", this layer has " + str(c.num_heads) + " of " + str(head_dim()));
  if (cache.length() == 0) throw Error("cache: is empty; extend_cache() it first");
  if (!query.present() || (query.rank() != 2 && query.rank() != 3))
    throw Error("query: expected rank 3 ([L, N, E] or batch_first [N, L, E]) or 2 ([L, E])");
  const bool batched = query.rank() == 3;
  const TensorView q = batch_major(query, "query", batched, c.batch_first, c.embed_dim);
  const int64_t N = cache.batch(), NB = q.size(0), L = q.size(1);
  if (NB % N != 0)
    throw Error("query: batch " + str(NB) + " must be a multiple of the cache's batch " + str(N));
  const int64_t beams = NB / N;
  if (options.is_causal && beams != 1)
    throw Error("is_causal: needs the query batch to equal the cache's (" + str(N) + "), got " +
                str(NB));
  const Tensor qp = project(q_proj_, q);
  const ProjectedHeads in{heads(qp.data(), N, c.num_heads, beams * L, head_dim()), cache.keys(),
                          cache.values()};
  return attend_heads(in, {N, c.num_heads, beams, L, cache.length(), batched},
                      CausalAlign::kBottomRight, options,
                      {out_proj_, bias_k_, bias_v_, c.add_zero_attn, c.batch_first});
}

}  // namespace xattn::nn
