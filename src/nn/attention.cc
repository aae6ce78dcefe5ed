// The generic routed attention layer:
//   q = x[query_input]·W_qᵀ + b_q,  k = x[key_input]·W_kᵀ + b_k,  v = x[value_input]·W_vᵀ + b_v
//   a = concat_h softmax(s·q_h·k_hᵀ + mask)·v_h    (s = 1/√D, or 1 unscaled; one kernel call)
//   y = a·W_oᵀ + b_o (if out_proj), then y, x[query_input] + γ·y or γ·y

#include "xattn/nn/attention.h"

#include <string>
#include <utility>
#include <vector>

#include "nn/heads.h"
#include "nn/rows.h"
#include "nn/shapes.h"
#include "xattn/attention.h"
#include "xattn/error.h"

namespace xattn::nn {
namespace {

std::string str(int64_t x) { return std::to_string(x); }

}  // namespace

Attention::Attention(const AttentionConfig& config, uint64_t seed) : config_(config) {
  AttentionConfig& c = config_;
  const int inputs = static_cast<int>(c.input_widths.size());
  if (inputs < 1) throw Error("Attention: input_widths must name at least one input");
  for (int i = 0; i < inputs; ++i)
    if (c.input_widths[i] < 1)
      throw Error("Attention: input_widths[" + str(i) + "] must be >= 1, got " +
                  str(c.input_widths[i]));
  for (const auto& [index, name] : {std::pair{c.query_input, "query_input"},
                                    std::pair{c.key_input, "key_input"},
                                    std::pair{c.value_input, "value_input"}})
    if (index < 0 || index >= inputs)
      throw Error(std::string("Attention: ") + name + " must index one of the " + str(inputs) +
                  " inputs, got " + str(index));
  const int64_t width = c.input_widths[c.query_input];
  if (c.qk_dim == 0) c.qk_dim = width;
  if (c.v_dim == 0) c.v_dim = width;
  if (c.num_heads < 1 || c.qk_dim % c.num_heads != 0 || c.v_dim % c.num_heads != 0)
    throw Error("Attention: num_heads must be >= 1 and divide qk_dim and v_dim, got " +
                str(c.num_heads) + " heads for " + str(c.qk_dim) + " and " + str(c.v_dim));
  if (c.residual == Residual::kAddGamma && out_width() != width)
    throw Error("Attention: adding the result to the query input needs an output width equal to "
                "its width " + str(width) + ", got " + str(out_width()) +
                " (v_dim without out_proj)");
  q_proj_ = Linear(width, c.qk_dim, c.bias, seed);
  k_proj_ = Linear(c.input_widths[c.key_input], c.qk_dim, c.bias, seed + 1);
  v_proj_ = Linear(c.input_widths[c.value_input], c.v_dim, c.bias, seed + 2);
  if (c.out_proj) out_proj_ = Linear(c.v_dim, width, c.bias, seed + 3);
}

int64_t Attention::out_width() const {
  return config_.out_proj ? config_.input_widths[config_.query_input] : config_.v_dim;
}

std::vector<std::string> Attention::parameter_names() const {
  std::vector<std::string> names;
  for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
    if (std::string(proj) == "out_proj" && !config_.out_proj) continue;
    names.push_back(std::string(proj) + ".weight");
    if (config_.bias) names.push_back(std::string(proj) + ".bias");
  }
  if (config_.residual != Residual::kNone) names.push_back("gamma");
  return names;
}

void Attention::load_state_dict(const ParameterLookup& lookup) {
  Attention next = *this;  // loaded into a copy: a failure leaves this layer as it was
  const auto load = [&](Linear& proj, const std::string& name) {
    const TensorView bias = config_.bias ? lookup(name + ".bias") : TensorView{};
    if (config_.bias && !bias.present()) throw Error("state_dict: missing '" + name + ".bias'");
    const TensorView weight = lookup(name + ".weight");
    if (!weight.present()) throw Error("state_dict: missing '" + name + ".weight'");
    proj.load(weight, bias, name);
  };
  load(next.q_proj_, "q_proj");
  load(next.k_proj_, "k_proj");
  load(next.v_proj_, "v_proj");
  if (config_.out_proj) load(next.out_proj_, "out_proj");
  if (config_.residual != Residual::kNone) {
    Tensor gamma({1});
    copy_into(lookup("gamma"), gamma, "gamma");
    next.gamma_ = gamma.data()[0];
  }
  *this = std::move(next);
}

Tensor Attention::forward(std::span<const TensorView> inputs, const AttentionParams& params) const {
  const AttentionConfig& c = config_;
  if (inputs.size() != c.input_widths.size())
    throw Error("inputs: expected " + str(static_cast<int64_t>(c.input_widths.size())) +
                " sequences, got " + str(static_cast<int64_t>(inputs.size())));
  if (params.scale.has_value())
    throw Error("params.scale: must be unset; the layer's `scaled` option decides it");
  const auto input = [&](int i, const char* role) {
    const std::string name = "inputs[" + str(i) + "] (" + role + ")";
    return batch_major(inputs[i], name.c_str(), true, true, c.input_widths[i]);
  };
  const TensorView xq = input(c.query_input, "query"), xk = input(c.key_input, "key"),
                   xv = input(c.value_input, "value");
  const int64_t N = xq.size(0), L = xq.size(1), S = xk.size(1);
  if (xk.size(0) != N || xv.size(0) != N || xv.size(1) != S)
    throw Error("inputs: the key and value sequences must have the query's batch " + str(N) +
                " and one length, got batches " + str(xk.size(0)) + " and " + str(xv.size(0)) +
                ", lengths " + str(S) + " and " + str(xv.size(1)));

  const int64_t H = c.num_heads, D = c.qk_dim / H, Dv = c.v_dim / H;
  const Tensor q = project(q_proj_, xq), k = project(k_proj_, xk), v = project(v_proj_, xv);
  AttentionParams p = params;
  if (!c.scaled) p.scale = 1.0f;
  Tensor a({N, L, c.v_dim});
  attention(heads(q.data(), N, H, L, D), heads(k.data(), N, H, S, D), heads(v.data(), N, H, S, Dv),
            p, {heads(a.data(), N, H, L, Dv)});

  Tensor y = c.out_proj ? Tensor({N, L, out_width()}) : std::move(a);
  if (c.out_proj)
    out_proj_.forward({a.data(), N * L, c.v_dim, c.v_dim}, {y.data(), N * L, out_width(), out_width()});
  if (c.residual == Residual::kNone) return y;
  const int64_t W = out_width();
  std::vector<float> scratch;
  const RowsView x = c.residual == Residual::kAddGamma ? as_rows(xq, "query input", scratch)
                                                       : RowsView{};
  for (int64_t r = 0; r < N * L; ++r)
    for (int64_t j = 0; j < W; ++j) {
      float& out = y.data()[r * W + j];
      out = (x.data ? x.data[r * x.ld + j] : 0.0f) + gamma_ * out;
    }
  return y;
}

}  // namespace xattn::nn
