// The `xattn._xattn_dist` extension: xattn::dist (attention across MPI processes) for the Python
// package, built only where MPI is found. The communicator arrives as its Fortran handle
// (mpi4py's Comm.py2f()), so that no mpi4py header is needed; MPI_Comm_f2c turns it back.

#include <mpi.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "array_spec.h"
#include "xattn/dist.h"

namespace py = pybind11;

namespace {

using namespace xattn::python;

MPI_Comm to_comm(int64_t fortran_handle) {
  return MPI_Comm_f2c(static_cast<MPI_Fint>(fortran_handle));
}

void attention_split_kv(const ArraySpec& q, const ArraySpec& k_shard, const ArraySpec& v_shard,
                        const Params& params, int64_t comm, const ArraySpec& out,
                        const OptionalArray& lse) {
  const xattn::TensorView qv = to_view(q, "q"), kv = to_view(k_shard, "k_shard"),
                          vv = to_view(v_shard, "v_shard");
  const xattn::AttentionParams p = params.view();
  const xattn::AttentionOutputs o{to_mutable(out, "out"), to_mutable(lse, "lse")};
  // The arrays are only borrowed: the Python caller holds references to all of them. Other
  // Python threads may run while this one waits for the other ranks.
  py::gil_scoped_release release;
  xattn::dist::attention_split_kv(qv, kv, vv, p, to_comm(comm), o);
}

void attention_split_kv_backward(const ArraySpec& q, const ArraySpec& k_shard,
                                 const ArraySpec& v_shard, const ArraySpec& out,
                                 const ArraySpec& lse, const ArraySpec& dout,
                                 const Params& params, int64_t comm, const ArraySpec& dq,
                                 const ArraySpec& dk, const ArraySpec& dv) {
  const xattn::TensorView qv = to_view(q, "q"), kv = to_view(k_shard, "k_shard"),
                          vv = to_view(v_shard, "v_shard");
  const xattn::TensorView ov = to_view(out, "out"), lv = to_view(lse, "lse"),
                          dov = to_view(dout, "dout");
  const xattn::AttentionParams p = params.view();
  const xattn::AttentionGradients g{to_mutable(dq, "dq"), to_mutable(dk, "dk"),
                                    to_mutable(dv, "dv")};
  py::gil_scoped_release release;
  xattn::dist::attention_split_kv_backward(qv, kv, vv, ov, lv, dov, p, to_comm(comm), g);
}

xattn::dist::RingLayout ring_layout(const std::string& layout) {
  if (layout == "contiguous") return xattn::dist::RingLayout::kContiguous;
  if (layout == "zigzag") return xattn::dist::RingLayout::kZigzag;
  throw xattn::Error("layout: expected 'contiguous' or 'zigzag', got '" + layout + "'");
}

void ring_attention(const ArraySpec& q, const ArraySpec& k, const ArraySpec& v,
                    const Params& params, int64_t comm, const std::string& layout,
                    const ArraySpec& out, const OptionalArray& lse) {
  const xattn::TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v");
  const xattn::AttentionParams p = params.view();
  const xattn::AttentionOutputs o{to_mutable(out, "out"), to_mutable(lse, "lse")};
  const xattn::dist::RingLayout l = ring_layout(layout);
  py::gil_scoped_release release;
  xattn::dist::ring_attention(qv, kv, vv, p, to_comm(comm), l, o);
}

void ring_attention_backward(const ArraySpec& q, const ArraySpec& k, const ArraySpec& v,
                             const ArraySpec& out, const ArraySpec& lse, const ArraySpec& dout,
                             const Params& params, int64_t comm, const std::string& layout,
                             const ArraySpec& dq, const ArraySpec& dk, const ArraySpec& dv) {
  const xattn::TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v");
  const xattn::TensorView ov = to_view(out, "out"), lv = to_view(lse, "lse"),
                          dov = to_view(dout, "dout");
  const xattn::AttentionParams p = params.view();
  const xattn::AttentionGradients g{to_mutable(dq, "dq"), to_mutable(dk, "dk"),
                                    to_mutable(dv, "dv")};
  const xattn::dist::RingLayout l = ring_layout(layout);
  py::gil_scoped_release release;
  xattn::dist::ring_attention_backward(qv, kv, vv, ov, lv, dov, p, to_comm(comm), l, g);
}

void reject_call(int64_t comm, const std::string& why) {
  py::gil_scoped_release release;
  xattn::dist::reject_call(to_comm(comm), why);
}

}  // namespace

PYBIND11_MODULE(_xattn_dist, m) {
  m.doc() = "Low-level binding of xattn::dist (MPI); use `xattn.dist` instead.";
  py::module_::import("xattn._xattn");  // Params, and xattn::Error as xattn.Error
  m.def("attention_split_kv", &attention_split_kv, py::arg("q"), py::arg("k_shard"),
        py::arg("v_shard"), py::arg("params"), py::arg("comm"), py::arg("out"), py::arg("lse"),
        "Split-KV attention over the ranks of comm (a Fortran handle) into preallocated outputs.");
  m.def("attention_split_kv_backward", &attention_split_kv_backward, py::arg("q"),
        py::arg("k_shard"), py::arg("v_shard"), py::arg("out"), py::arg("lse"), py::arg("dout"),
        py::arg("params"), py::arg("comm"), py::arg("dq"), py::arg("dk"), py::arg("dv"),
        "Gradients of split-KV attention into preallocated dq, dk, dv.");
  m.def("ring_attention", &ring_attention, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("params"), py::arg("comm"), py::arg("layout"), py::arg("out"), py::arg("lse"),
        "Ring attention over the ranks of comm (a Fortran handle) into preallocated outputs.");
  m.def("ring_attention_backward", &ring_attention_backward, py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dout"), py::arg("params"),
        py::arg("comm"), py::arg("layout"), py::arg("dq"), py::arg("dk"), py::arg("dv"),
        "Gradients of ring attention into preallocated dq, dk, dv.");
  m.def("reject_call", &reject_call, py::arg("comm"), py::arg("why"),
        "Joins the other ranks' collective checks as a rank whose arguments are bad.");
}
