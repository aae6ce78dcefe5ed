// Fuzzes SafetensorsFile: any bytes either raise xattn::Error or open a file whose every tensor
// view reads exactly the bytes its header record names (checked against our own parse of the
// header), whose names and metadata match the header, and that survives a write_safetensors
// round trip. Every byte of every view is read, so a view reaching outside the mapping faults.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "fuzz_util.h"
#include "xattn/error.h"
#include "xattn/safetensors.h"

namespace {

using xattn::fuzz::check;
using xattn::fuzz::fail;

struct Record {
  std::string name;
  uint64_t begin = 0, end = 0;
};

// Reads every byte of a contiguous view of `n` bytes; returns them.
std::vector<uint8_t> read_all(const xattn::TensorView& v, uint64_t n) {
  std::vector<uint8_t> out(n);
  const auto* p = static_cast<const volatile uint8_t*>(v.data);
  for (uint64_t i = 0; i < n; ++i) out[i] = p[i];
  return out;
}

void check_file(const xattn::SafetensorsFile& f, const uint8_t* data, size_t size) {
  // The constructor accepted the file, so the header is a JSON object of well-formed records.
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t{data[i]} << (8 * i);
  check(header_len <= size - 8, "accepted a header longer than the file");
  const uint64_t data_start = 8 + header_len;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data + 8, data + data_start);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("accepted a header that is not JSON: ") + e.what());
  }
  std::vector<Record> records;
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      for (const auto& [k, v] : value.items()) metadata[k] = v.get<std::string>();
      continue;
    }
    const auto& off = value.at("data_offsets");
    records.push_back({key, off.at(0).get<uint64_t>(), off.at(1).get<uint64_t>()});
  }
  std::sort(records.begin(), records.end(), [](const Record& a, const Record& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  check(f.metadata() == metadata, "metadata() differs from the header's __metadata__");
  const std::vector<std::string> names = f.names();
  check(names.size() == records.size(), "names() has the wrong number of tensors");

  std::vector<xattn::NamedTensor> readable;
  for (size_t i = 0; i < names.size(); ++i) {
    const Record& r = records[i];
    check(names[i] == r.name, "names() is not in data-offset order");
    check(f.contains(r.name), "contains() misses a listed name");
    check(r.begin <= r.end && data_start + r.end <= size, "accepted an out-of-range tensor");
    xattn::TensorView v;
    try {
      v = f.tensor(r.name);
    } catch (const xattn::Error&) {
      continue;  // a dtype or rank xattn cannot hold, or misaligned data
    }
    check(v.present() && v.rank() >= 0 && v.rank() <= xattn::kMaxRank, "tensor() view rank");
    int64_t numel = 1, stride = 1;
    for (int d = v.rank() - 1; d >= 0; --d) {
      check(v.size(d) >= 0, "tensor() negative dim");
      check(v.size(d) == 1 || v.stride(d) == stride || numel == 0, "tensor() is not row-major");
      check(!__builtin_mul_overflow(numel, v.size(d), &numel), "tensor() numel overflows");
      stride *= v.size(d) == 0 ? 1 : v.size(d);
    }
    const uint64_t nbytes = static_cast<uint64_t>(numel) * static_cast<uint64_t>(xattn::dtype_size(v.dtype));
    check(nbytes == r.end - r.begin, "tensor() view size differs from its data_offsets");
    if (nbytes == 0) continue;
    check(reinterpret_cast<uintptr_t>(v.data) % static_cast<uintptr_t>(xattn::dtype_size(v.dtype)) == 0,
          "tensor() view is misaligned");
    const std::vector<uint8_t> bytes = read_all(v, nbytes);
    check(std::memcmp(bytes.data(), data + data_start + r.begin, nbytes) == 0,
          "tensor() view reads other bytes than its data_offsets name");
    readable.push_back({r.name, v});
  }
  check(!f.contains("__metadata__"), "__metadata__ listed as a tensor");

  // Round trip through the writer: same tensors (for the dtypes xattn holds), same metadata.
  if (size > (1u << 16)) return;
  static const std::string path = xattn::fuzz::scratch_path(".safetensors");
  xattn::write_safetensors(path, readable, metadata);
  const xattn::SafetensorsFile g(path);
  check(g.metadata() == metadata, "round trip changed the metadata");
  check(g.names().size() == readable.size(), "round trip changed the tensor count");
  for (const xattn::NamedTensor& t : readable) {
    const xattn::TensorView w = g.tensor(t.name);
    check(w.dtype == t.tensor.dtype && w.rank() == t.tensor.rank(), "round trip changed a dtype or rank");
    int64_t numel = 1;
    for (int d = 0; d < w.rank(); ++d) {
      check(w.size(d) == t.tensor.size(d), "round trip changed a shape");
      numel *= w.size(d);
    }
    const auto n = static_cast<uint64_t>(numel * xattn::dtype_size(w.dtype));
    check(read_all(w, n) == read_all(t.tensor, n), "round trip changed the data");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static xattn::fuzz::MemFile file;
  const std::string& path = file.write(data, size);
  try {
    xattn::SafetensorsFile f(path);
    check_file(f, data, size);
    // Moving hands over the mapping: the moved-to file still reads every tensor.
    const std::vector<std::string> names = f.names();
    xattn::SafetensorsFile moved(std::move(f));
    check(moved.names() == names, "moving changed the names");
    for (const std::string& name : names) {
      try {
        const xattn::TensorView v = moved.tensor(name);
        int64_t numel = 1;
        for (int d = 0; d < v.rank(); ++d) numel *= v.size(d);
        if (numel > 0) (void)*static_cast<const volatile uint8_t*>(v.data);
      } catch (const xattn::Error&) {
      }
    }
  } catch (const xattn::Error&) {
  }
  return 0;
}
