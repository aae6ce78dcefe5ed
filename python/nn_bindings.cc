// The layers (xattn::nn) for the Python package's xattn.nn: constructors, parameter loading,
// forward passes and the decoder cache. Results come back as numpy arrays that own the C++
// tensors they wrap (no copy); python/xattn/nn.py turns them into the caller's kind.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <string>

#include "array_spec.h"
#include "xattn/nn/attention.h"
#include "xattn/nn/multihead_attention.h"

namespace py = pybind11;
using namespace xattn::python;

namespace {

using xattn::nn::Attention;
using xattn::nn::AttentionConfig;
using xattn::nn::KVCache;
using xattn::nn::MultiheadAttention;
using xattn::nn::MultiheadAttentionOptions;
using xattn::nn::MultiheadAttentionResult;
using xattn::nn::Tensor;

py::object to_numpy(Tensor&& t) {
  if (t.empty()) return py::none();
  auto* owned = new Tensor(std::move(t));
  py::capsule owner(owned, [](void* p) { delete static_cast<Tensor*>(p); });
  return py::array_t<float>(owned->shape(), owned->data(), owner);
}

py::tuple to_python(MultiheadAttentionResult&& r) {
  return py::make_tuple(to_numpy(std::move(r.out)), to_numpy(std::move(r.weights)));
}

// The forward options; the mask views point into the caller's arrays.
MultiheadAttentionOptions options(const OptionalArray& key_padding_mask,
                                  const OptionalArray& attn_mask, bool is_causal,
                                  bool need_weights, bool average_attn_weights, int num_threads) {
  MultiheadAttentionOptions o;
  o.key_padding_mask = to_view(key_padding_mask, "key_padding_mask");
  o.attn_mask = to_view(attn_mask, "attn_mask");
  o.is_causal = is_causal;
  o.need_weights = need_weights;
  o.average_attn_weights = average_attn_weights;
  o.num_threads = num_threads;
  return o;
}

xattn::nn::Residual parse_residual(const std::string& name) {
  if (name == "none") return xattn::nn::Residual::kNone;
  if (name == "add") return xattn::nn::Residual::kAddGamma;
  if (name == "scale") return xattn::nn::Residual::kScaleGamma;
  throw xattn::Error("residual: must be 'none', 'add' or 'scale', got '" + name + "'");
}

// A state dict of array specs as the C++ layers' lookup function.
auto lookup_in(const std::map<std::string, ArraySpec>& params) {
  return [&params](std::string_view name) {
    const auto it = params.find(std::string(name));
    return it == params.end() ? xattn::TensorView{} : to_view(it->second, it->first);
  };
}

}  // namespace

void bind_nn(py::module_& m) {
  py::class_<KVCache>(m, "KVCache", "Projected keys and values (see xattn/nn/kv_cache.h).")
      .def_property_readonly("batch", &KVCache::batch)
      .def_property_readonly("num_heads", &KVCache::num_heads)
      .def_property_readonly("head_dim", &KVCache::head_dim)
      .def_property_readonly("length", &KVCache::length)
      .def_property_readonly("capacity", &KVCache::capacity)
      .def("clear", &KVCache::clear);

  py::class_<MultiheadAttention>(m, "MultiheadAttention",
                                 "torch.nn.MultiheadAttention (see xattn/nn/multihead_attention.h).")
      .def(py::init([](int64_t embed_dim, int64_t num_heads, int64_t kdim, int64_t vdim, bool bias,
                       bool add_bias_kv, bool add_zero_attn, bool batch_first, uint64_t seed) {
             return MultiheadAttention({embed_dim, num_heads, kdim, vdim, bias, add_bias_kv,
                                        add_zero_attn, batch_first},
                                       seed);
           }),
           py::arg("embed_dim"), py::arg("num_heads"), py::arg("kdim"), py::arg("vdim"),
           py::arg("bias"), py::arg("add_bias_kv"), py::arg("add_zero_attn"),
           py::arg("batch_first"), py::arg("seed"))
      .def("parameter_names", &MultiheadAttention::parameter_names)
      .def(
          "load_state_dict",
          [](MultiheadAttention& self, const std::map<std::string, ArraySpec>& params) {
            self.load_state_dict(lookup_in(params));
          },
          py::arg("params"))
      .def(
          "load_safetensors",
          [](MultiheadAttention& self, const std::string& path, const std::string& prefix) {
            py::gil_scoped_release release;
            self.load_safetensors(path, prefix);
          },
          py::arg("path"), py::arg("prefix"))
      .def(
          "forward",
          [](const MultiheadAttention& self, const ArraySpec& query, const ArraySpec& key,
             const ArraySpec& value, const OptionalArray& key_padding_mask,
             const OptionalArray& attn_mask, bool is_causal, bool need_weights,
             bool average_attn_weights, int num_threads) {
            const auto q = to_view(query, "query"), k = to_view(key, "key"),
                       v = to_view(value, "value");
            const auto o = options(key_padding_mask, attn_mask, is_causal, need_weights,
                                   average_attn_weights, num_threads);
            MultiheadAttentionResult r;
            {
              py::gil_scoped_release release;
              r = self.forward(q, k, v, o);
            }
            return to_python(std::move(r));
          },
          py::arg("query"), py::arg("key"), py::arg("value"), py::arg("key_padding_mask"),
          py::arg("attn_mask"), py::arg("is_causal"), py::arg("need_weights"),
          py::arg("average_attn_weights"), py::arg("num_threads"))
      .def("make_cache", &MultiheadAttention::make_cache, py::arg("batch"), py::arg("capacity"))
      .def(
          "extend_cache",
          [](const MultiheadAttention& self, KVCache& cache, const ArraySpec& key,
             const ArraySpec& value) {
            const auto k = to_view(key, "key"), v = to_view(value, "value");
            py::gil_scoped_release release;
            self.extend_cache(cache, k, v);
          },
          py::arg("cache"), py::arg("key"), py::arg("value"))
      .def(
          "forward_cached",
          [](const MultiheadAttention& self, const ArraySpec& query, const KVCache& cache,
             const OptionalArray& key_padding_mask, const OptionalArray& attn_mask,
             bool is_causal, bool need_weights, bool average_attn_weights, int num_threads) {
            const auto q = to_view(query, "query");
            const auto o = options(key_padding_mask, attn_mask, is_causal, need_weights,
                                   average_attn_weights, num_threads);
            MultiheadAttentionResult r;
            {
              py::gil_scoped_release release;
              r = self.forward_cached(q, cache, o);
            }
            return to_python(std::move(r));
          },
          py::arg("query"), py::arg("cache"), py::arg("key_padding_mask"), py::arg("attn_mask"),
          py::arg("is_causal"), py::arg("need_weights"), py::arg("average_attn_weights"),
          py::arg("num_threads"));

  py::class_<Attention>(m, "Attention", "The routed attention layer (see xattn/nn/attention.h).")
      .def(py::init([](std::vector<int64_t> input_widths, int query_input, int key_input,
                       int value_input, int64_t num_heads, int64_t qk_dim, int64_t v_dim,
                       bool bias, bool out_proj, bool scaled, const std::string& residual,
                       uint64_t seed) {
             AttentionConfig c;
             c.input_widths = std::move(input_widths);
             c.query_input = query_input;
             c.key_input = key_input;
             c.value_input = value_input;
             c.num_heads = num_heads;
             c.qk_dim = qk_dim;
             c.v_dim = v_dim;
             c.bias = bias;
             c.out_proj = out_proj;
             c.scaled = scaled;
             c.residual = parse_residual(residual);
             return Attention(c, seed);
           }),
           py::arg("input_widths"), py::arg("query_input"), py::arg("key_input"),
           py::arg("value_input"), py::arg("num_heads"), py::arg("qk_dim"), py::arg("v_dim"),
           py::arg("bias"), py::arg("out_proj"), py::arg("scaled"), py::arg("residual"),
           py::arg("seed"))
      .def("parameter_names", &Attention::parameter_names)
      .def(
          "load_state_dict",
          [](Attention& self, const std::map<std::string, ArraySpec>& params) {
            self.load_state_dict(lookup_in(params));
          },
          py::arg("params"))
      .def(
          "forward",
          [](const Attention& self, const std::vector<ArraySpec>& inputs, const Params& params) {
            std::vector<xattn::TensorView> views;
            for (size_t i = 0; i < inputs.size(); ++i)
              views.push_back(to_view(inputs[i], "inputs[" + std::to_string(i) + "]"));
            const xattn::AttentionParams p = params.view();
            Tensor out;
            {
              py::gil_scoped_release release;
              out = self.forward(views, p);
            }
            return to_numpy(std::move(out));
          },
          py::arg("inputs"), py::arg("params"));
}
