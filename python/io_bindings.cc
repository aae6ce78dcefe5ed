// File I/O bindings of `xattn._xattn`: safetensors. Like bindings.cc, only conversion: arrays
// arrive as ArraySpec tuples built by the Python package, and tensors leave as numpy arrays that
// view the memory-mapped file (the file object is their base, so the mapping outlives them).

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "array_spec.h"
#include "xattn/safetensors.h"

namespace py = pybind11;

namespace {

using namespace xattn::python;

// numpy has no bfloat16: those tensors come out as their raw uint16 bits, and the Python side
// converts them (the dtype name returned alongside says which they are).
py::dtype numpy_dtype(xattn::DType t) {
  switch (t) {
    case xattn::DType::kF32: return py::dtype("float32");
    case xattn::DType::kF16: return py::dtype("float16");
    case xattn::DType::kBF16: return py::dtype("uint16");
    case xattn::DType::kBool: return py::dtype("bool");
  }
  throw xattn::Error("unknown dtype");
}

// (dtype name, read-only numpy array viewing the mapping) for one tensor of `self`.
py::tuple tensor_array(const py::object& self, const std::string& name) {
  const auto& file = self.cast<const xattn::SafetensorsFile&>();
  const xattn::TensorView v = file.tensor(name);
  const py::ssize_t itemsize = xattn::dtype_size(v.dtype);
  std::vector<py::ssize_t> shape, strides;
  for (int d = 0; d < v.rank(); ++d) {
    shape.push_back(v.size(d));
    strides.push_back(v.stride(d) * itemsize);
  }
  py::array array(numpy_dtype(v.dtype), shape, strides, v.data, self);
  // The mapping is read-only: a write through the array would fault, so numpy must refuse it.
  array.attr("setflags")(py::arg("write") = false);
  return py::make_tuple(std::string(xattn::dtype_name(v.dtype)), array);
}

void save(const std::string& path, const std::vector<std::pair<std::string, ArraySpec>>& tensors,
          const std::map<std::string, std::string>& metadata) {
  std::vector<xattn::NamedTensor> named;
  named.reserve(tensors.size());
  for (const auto& [name, spec] : tensors) {
    named.push_back({name, to_view(spec, "tensors['" + name + "']")});
  }
  // The arrays are only borrowed: the Python caller holds references to all of them.
  py::gil_scoped_release release;
  xattn::write_safetensors(path, named, metadata);
}

}  // namespace

void bind_io(py::module_& m) {
  py::class_<xattn::SafetensorsFile>(m, "SafetensorsFile",
                                     "A memory-mapped .safetensors file (see xattn/safetensors.h).")
      .def(py::init([](const std::string& path) {
             py::gil_scoped_release release;
             return std::make_unique<xattn::SafetensorsFile>(path);
           }),
           py::arg("path"))
      .def_property_readonly("path", &xattn::SafetensorsFile::path)
      .def("names", &xattn::SafetensorsFile::names, "Tensor names in order of data offset.")
      .def("metadata", &xattn::SafetensorsFile::metadata, "The '__metadata__' string map.")
      .def("array", &tensor_array, py::arg("name"),
           "(dtype name, read-only numpy array viewing the file); bfloat16 as uint16 bits.");
  m.def("save_safetensors", &save, py::arg("path"), py::arg("tensors"), py::arg("metadata"),
        "Writes [(name, (ptr, dtype, shape, strides))] and a metadata dict atomically.");
}
