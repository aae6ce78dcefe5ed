// File I/O bindings of `xattn._xattn`: safetensors, audio files and log-mel features. Like bindings.cc, only conversion: arrays
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
#include "xattn/audio.h"
#include "xattn/log_mel.h"
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

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// A new numpy array holding `values` (moved in; the capsule frees them with the array).
py::array_t<float> to_numpy(std::vector<float>&& values, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<float>(std::move(values));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>(shape, owned->data(), free_when_done);
}

py::tuple read_audio(const std::string& path, double max_seconds) {
  xattn::audio::Audio a;
  {
    py::gil_scoped_release release;
    a = xattn::audio::read_audio(path, max_seconds);
  }
  const auto n = static_cast<py::ssize_t>(a.samples.size());
  return py::make_tuple(to_numpy(std::move(a.samples), {n}), a.sample_rate);
}

py::array_t<float> resample(const FloatArray& samples, int64_t from_rate, int64_t to_rate) {
  std::vector<float> out;
  {
    py::gil_scoped_release release;
    out = xattn::audio::resample({samples.data(), static_cast<size_t>(samples.size())}, from_rate,
                                 to_rate);
  }
  const auto n = static_cast<py::ssize_t>(out.size());
  return to_numpy(std::move(out), {n});
}

xattn::audio::LogMelConfig log_mel_config(int64_t sample_rate, int64_t n_fft, int64_t hop,
                                          int64_t n_mels, double f_min, double f_max) {
  return {sample_rate, n_fft, hop, n_mels, f_min, f_max};
}

py::array_t<float> log_mel(const FloatArray& samples, int64_t sample_rate, int64_t n_fft,
                           int64_t hop, int64_t n_mels, double f_min, double f_max) {
  const auto config = log_mel_config(sample_rate, n_fft, hop, n_mels, f_min, f_max);
  std::vector<float> out;
  {
    py::gil_scoped_release release;
    out = xattn::audio::log_mel({samples.data(), static_cast<size_t>(samples.size())}, config);
  }
  const auto frames = static_cast<py::ssize_t>(out.size() / n_mels);
  return to_numpy(std::move(out), {frames, static_cast<py::ssize_t>(n_mels)});
}

py::array_t<float> mel_filters(int64_t sample_rate, int64_t n_fft, int64_t n_mels, double f_min,
                               double f_max) {
  std::vector<float> out =
      xattn::audio::mel_filters(log_mel_config(sample_rate, n_fft, n_fft, n_mels, f_min, f_max));
  return to_numpy(std::move(out), {static_cast<py::ssize_t>(n_mels),
                                   static_cast<py::ssize_t>(n_fft / 2 + 1)});
}

}  // namespace

void bind_io(py::module_& m) {
  m.def("read_audio", &read_audio, py::arg("path"), py::arg("max_seconds"),
        "(mono float32 samples, sample rate) of an audio file (libsndfile).");
  m.def("resample", &resample, py::arg("samples"), py::arg("from_rate"), py::arg("to_rate"),
        "1-D float32 samples converted between rates (libsamplerate, best sinc).");
  m.def("log_mel", &log_mel, py::arg("samples"), py::arg("sample_rate"), py::arg("n_fft"),
        py::arg("hop"), py::arg("n_mels"), py::arg("f_min"), py::arg("f_max"),
        "The log-mel spectrogram [frames, n_mels] of 1-D float32 samples (see xattn/log_mel.h).");
  m.def("mel_filters", &mel_filters, py::arg("sample_rate"), py::arg("n_fft"), py::arg("n_mels"),
        py::arg("f_min"), py::arg("f_max"), "The mel filterbank [n_mels, n_fft / 2 + 1].");
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
