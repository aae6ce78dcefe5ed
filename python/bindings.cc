// The `xattn._xattn` extension: a thin layer that turns array descriptions made by the Python
// package (python/xattn/) into xattn views and calls the C++ API. It holds no math and checks only
// what the C++ API cannot see (dtype names, ranks); everything else is validated by the library,
// whose xattn::Error becomes a Python ValueError (subclass `xattn.Error`).

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "array_spec.h"
#include "xattn/xattn.h"

namespace py = pybind11;

namespace {

using namespace xattn::python;

xattn::AttentionOutputs to_outputs(const ArraySpec& out, const OptionalArray& lse,
                                   const OptionalArray& weights) {
  return {to_mutable(out, "out"), to_mutable(lse, "lse"), to_mutable(weights, "weights")};
}

void attention(const ArraySpec& q, const ArraySpec& k, const ArraySpec& v, const Params& params,
               const ArraySpec& out, const OptionalArray& lse, const OptionalArray& weights) {
  const xattn::TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v");
  const xattn::AttentionParams p = params.view();
  const xattn::AttentionOutputs o = to_outputs(out, lse, weights);
  // The arrays are only borrowed: the Python caller holds references to all of them.
  py::gil_scoped_release release;
  xattn::attention(qv, kv, vv, p, o);
}

// attention()'s checks alone, for callers that must agree with other processes that all is well
// before computing (xattn.torch_dist).
void validate_attention(const ArraySpec& q, const ArraySpec& k, const ArraySpec& v,
                        const Params& params, const ArraySpec& out, const OptionalArray& lse,
                        const OptionalArray& weights) {
  const xattn::TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v");
  xattn::validate_attention(qv, kv, vv, params.view(), to_outputs(out, lse, weights));
}

void attention_varlen(const ArraySpec& q, const ArraySpec& k, const ArraySpec& v,
                      const std::vector<int64_t>& cu_seqlens_q,
                      const std::vector<int64_t>& cu_seqlens_k, const Params& params,
                      const ArraySpec& out, const OptionalArray& lse, const OptionalArray& weights) {
  const xattn::TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v");
  const xattn::AttentionParams p = params.view();
  const xattn::AttentionOutputs o = to_outputs(out, lse, weights);
  py::gil_scoped_release release;
  xattn::attention_varlen(qv, kv, vv, cu_seqlens_q, cu_seqlens_k, p, o);
}

xattn::AttentionGradients to_gradients(const ArraySpec& dq, const ArraySpec& dk,
                                       const ArraySpec& dv, const OptionalArray& dmask) {
  return {to_mutable(dq, "dq"), to_mutable(dk, "dk"), to_mutable(dv, "dv"),
          to_mutable(dmask, "dmask")};
}

void attention_backward(const ArraySpec& q, const ArraySpec& k, const ArraySpec& v,
                        const ArraySpec& out, const ArraySpec& lse, const ArraySpec& dout,
                        const Params& params, const ArraySpec& dq, const ArraySpec& dk,
                        const ArraySpec& dv, const OptionalArray& dmask) {
  const xattn::TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v");
  const xattn::TensorView ov = to_view(out, "out"), lv = to_view(lse, "lse");
  const xattn::TensorView dov = to_view(dout, "dout");
  const xattn::AttentionParams p = params.view();
  const xattn::AttentionGradients g = to_gradients(dq, dk, dv, dmask);
  py::gil_scoped_release release;
  xattn::attention_backward(qv, kv, vv, ov, lv, dov, p, g);
}

void attention_varlen_backward(const ArraySpec& q, const ArraySpec& k, const ArraySpec& v,
                               const std::vector<int64_t>& cu_seqlens_q,
                               const std::vector<int64_t>& cu_seqlens_k, const ArraySpec& out,
                               const ArraySpec& lse, const ArraySpec& dout, const Params& params,
                               const ArraySpec& dq, const ArraySpec& dk, const ArraySpec& dv,
                               const OptionalArray& dmask) {
  const xattn::TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v");
  const xattn::TensorView ov = to_view(out, "out"), lv = to_view(lse, "lse");
  const xattn::TensorView dov = to_view(dout, "dout");
  const xattn::AttentionParams p = params.view();
  const xattn::AttentionGradients g = to_gradients(dq, dk, dv, dmask);
  py::gil_scoped_release release;
  xattn::attention_varlen_backward(qv, kv, vv, cu_seqlens_q, cu_seqlens_k, ov, lv, dov, p, g);
}

void merge(const ArraySpec& out_a, const ArraySpec& lse_a, const ArraySpec& out_b,
           const ArraySpec& lse_b, const ArraySpec& out, const ArraySpec& lse) {
  const xattn::TensorView oa = to_view(out_a, "out_a"), la = to_view(lse_a, "lse_a");
  const xattn::TensorView ob = to_view(out_b, "out_b"), lb = to_view(lse_b, "lse_b");
  const xattn::MutableTensorView o = to_mutable(out, "out"), l = to_mutable(lse, "lse");
  py::gil_scoped_release release;
  xattn::merge(oa, la, ob, lb, o, l);
}

xattn::CrissCrossParams criss_cross_params(std::optional<float> scale, int num_threads) {
  xattn::CrissCrossParams p;
  p.scale = scale;
  p.num_threads = num_threads;
  return p;
}

void criss_cross_attention(const ArraySpec& q, const ArraySpec& k, const ArraySpec& v,
                           std::optional<float> scale, int num_threads, const ArraySpec& out,
                           const OptionalArray& lse) {
  const xattn::TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v");
  const xattn::AttentionOutputs o = to_outputs(out, lse, std::nullopt);
  py::gil_scoped_release release;
  xattn::criss_cross_attention(qv, kv, vv, criss_cross_params(scale, num_threads), o);
}

void criss_cross_attention_backward(const ArraySpec& q, const ArraySpec& k, const ArraySpec& v,
                                    const ArraySpec& out, const ArraySpec& lse,
                                    const ArraySpec& dout, std::optional<float> scale,
                                    int num_threads, const ArraySpec& dq, const ArraySpec& dk,
                                    const ArraySpec& dv) {
  const xattn::TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v");
  const xattn::TensorView ov = to_view(out, "out"), lv = to_view(lse, "lse");
  const xattn::TensorView dov = to_view(dout, "dout");
  const xattn::AttentionGradients g = to_gradients(dq, dk, dv, std::nullopt);
  py::gil_scoped_release release;
  xattn::criss_cross_attention_backward(qv, kv, vv, ov, lv, dov,
                                        criss_cross_params(scale, num_threads), g);
}

}  // namespace

void bind_io(pybind11::module_& m);  // io_bindings.cc
void bind_nn(pybind11::module_& m);  // nn_bindings.cc

PYBIND11_MODULE(_xattn, m) {
  m.doc() = "Low-level binding of the xattn C++ API; use the `xattn` package instead.";
  py::register_exception<xattn::Error>(m, "Error", PyExc_ValueError);

  py::class_<Params>(m, "Params", "Options of one attention call (see xattn/params.h).")
      .def(py::init<>())
      .def_readwrite("scale", &Params::scale)
      .def_readwrite("softcap", &Params::softcap)
      .def_readwrite("causal", &Params::causal)
      .def_readwrite("align", &Params::align)
      .def_readwrite("window_left", &Params::window_left)
      .def_readwrite("window_right", &Params::window_right)
      .def_readwrite("diagonal_offset", &Params::diagonal_offset)
      .def_readwrite("kv_lens", &Params::kv_lens)
      .def_readwrite("q_lens", &Params::q_lens)
      .def_readwrite("mask", &Params::mask)
      .def_readwrite("bf16_probabilities", &Params::bf16_probabilities)
      .def_readwrite("num_threads", &Params::num_threads);

  m.def("attention", &attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("params"),
        py::arg("out"), py::arg("lse"), py::arg("weights"),
        "Dense attention into preallocated outputs; arrays are (ptr, dtype, shape, strides).");
  m.def("validate_attention", &validate_attention, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("params"), py::arg("out"), py::arg("lse"), py::arg("weights"),
        "Raises what attention() would raise for these arguments; computes nothing.");
  m.def("attention_varlen", &attention_varlen, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"), py::arg("params"), py::arg("out"),
        py::arg("lse"), py::arg("weights"),
        "Packed variable-length attention into preallocated outputs.");
  m.def("attention_backward", &attention_backward, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("out"), py::arg("lse"), py::arg("dout"), py::arg("params"), py::arg("dq"),
        py::arg("dk"), py::arg("dv"), py::arg("dmask"),
        "Gradients of dense attention into preallocated dq, dk, dv (and dmask, optional).");
  m.def("attention_varlen_backward", &attention_varlen_backward, py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"), py::arg("out"),
        py::arg("lse"), py::arg("dout"), py::arg("params"), py::arg("dq"), py::arg("dk"),
        py::arg("dv"), py::arg("dmask"),
        "Gradients of packed variable-length attention into preallocated dq, dk, dv (dmask).");
  m.def("merge", &merge, py::arg("out_a"), py::arg("lse_a"), py::arg("out_b"), py::arg("lse_b"),
        py::arg("out"), py::arg("lse"),
        "Merges two partial results over disjoint keys into preallocated outputs.");

  m.def("criss_cross_attention", &criss_cross_attention, py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("scale"), py::arg("num_threads"), py::arg("out"), py::arg("lse"),
        "Criss-cross attention over [B, H, W, D] maps into preallocated outputs.");
  m.def("criss_cross_attention_backward", &criss_cross_attention_backward, py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dout"),
        py::arg("scale"), py::arg("num_threads"), py::arg("dq"), py::arg("dk"), py::arg("dv"),
        "Gradients of criss-cross attention into preallocated dq, dk, dv.");

  m.def("version", &xattn::version, "The library version string.");
  m.def("simd_target", &xattn::simd_target, "The SIMD target the kernels dispatch to now.");
  m.def("bf16_dot_products", &xattn::bf16_dot_products,
        "Whether bfloat16 inputs use AVX-512 BF16 dot products on the target in use.");
  m.def("bf16_dot_reason", &xattn::bf16_dot_reason, "Why bf16_dot_products() says what it says.");
  m.def("force_bf16_dot_products", &xattn::force_bf16_dot_products, py::arg("mode"),
        "Force AVX-512 BF16 dot products 'on', 'off', or back to the CPU's choice ('auto').");
  m.def("cpu_name", &xattn::cpu_name, "The CPU the kernels' choices were made for.");
  m.def("kernel_tiles", &xattn::kernel_tiles, "The tile shapes of the SIMD target in use.");
  m.def("available_simd_targets", &xattn::available_simd_targets,
        "SIMD targets compiled in and supported by this CPU, best first.");
  m.def("force_simd_target", &xattn::force_simd_target, py::arg("name"),
        "Restricts dispatch to one target; '' restores the default.");
  m.def("blas_kernels", &xattn::blas_kernels,
        "The kernels OpenBLAS chose for this CPU, e.g. 'SkylakeX' ('Prescott': its SSE3 ones).");
  m.def("default_num_threads", &xattn::default_num_threads,
        "Threads a call with num_threads=0 uses.");
  bind_io(m);
  bind_nn(m);
}
