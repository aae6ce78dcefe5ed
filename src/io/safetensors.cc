// safetensors reader and writer. Format: a little-endian u64 N, then N bytes of UTF-8 JSON (an
// object: name -> {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional
// "__metadata__" string map), then the data buffer, which the offsets index into.
//
// Everything in the header is treated as hostile: the whole header is validated when the file is
// opened (every range checked against the real buffer, sizes against overflow), so tensor() only
// does pointer arithmetic that is already known to stay inside the mapping.

#include "xattn/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "io/file_io.h"
#include "xattn/error.h"

namespace xattn {
namespace {

using io::errno_text;
using io::fail;
using io::Fd;
using io::write_atomically;
using io::write_fully;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swapping");

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

constexpr size_t kLengthBytes = 8;
// The reference implementation refuses headers above 100 MB; a header that size already
// describes millions of tensors, so anything bigger is damage, not data.
constexpr uint64_t kMaxHeaderLen = 100'000'000;
constexpr std::string_view kMetadataKey = "__metadata__";
// Names and parser messages are cut to this many bytes in error messages.
constexpr size_t kMaxQuoted = 80;


// Keeps messages one line: control characters become '?', and long text is cut at a UTF-8
// character boundary (the text itself is UTF-8: JSON strings are validated by the parser).
std::string printable(std::string_view s) {
  std::string out;
  size_t n = s.size();
  if (n > kMaxQuoted) {
    n = kMaxQuoted;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) --n;
  }
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    out += (c < 0x20 || c == 0x7f) ? '?' : s[i];
  }
  if (n < s.size()) out += "...";
  return out;
}

std::string in_quotes(std::string_view s) {
  // Appended piecewise: GCC 12 -O3 warns falsely (-Wrestrict) about "'" + std::string.
  std::string out = "'";
  out += printable(s);
  out += '\'';
  return out;
}

// A JSON value for an error message. Containers are only named: nlohmann's dump() recurses, and
// a hostile header can nest arrays deeply enough to overflow the stack.
std::string describe(const Json& v) {
  if (v.is_primitive()) return printable(v.dump());
  return std::string("a JSON ") + v.type_name() + " of " + std::to_string(v.size()) + " elements";
}

std::string shape_string(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// --- dtypes -------------------------------------------------------------------------------------

struct DtypeInfo {
  std::string_view name;
  int bits;
  std::optional<DType> dtype;  // empty: in the spec, but no xattn DType holds it
};

// Every dtype of the safetensors spec; a name not listed here makes the file malformed.
constexpr DtypeInfo kDtypes[] = {
    {"F32", 32, DType::kF32},  {"F16", 16, DType::kF16},  {"BF16", 16, DType::kBF16},
    {"BOOL", 8, DType::kBool}, {"F64", 64, std::nullopt}, {"C64", 64, std::nullopt},
    {"I64", 64, std::nullopt}, {"U64", 64, std::nullopt}, {"I32", 32, std::nullopt},
    {"U32", 32, std::nullopt}, {"I16", 16, std::nullopt}, {"U16", 16, std::nullopt},
    {"I8", 8, std::nullopt},   {"U8", 8, std::nullopt},   {"F8_E4M3", 8, std::nullopt},
    {"F8_E5M2", 8, std::nullopt}, {"F8_E8M0", 8, std::nullopt}, {"F6_E2M3", 6, std::nullopt},
    {"F6_E3M2", 6, std::nullopt}, {"F4", 4, std::nullopt},
};

const DtypeInfo* find_dtype(std::string_view name) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

std::string_view file_dtype_name(DType t) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.dtype == t) return d.name;
  }
  return "?";
}

// --- header parsing -----------------------------------------------------------------------------

// Reads the fields of one tensor's header record, failing with messages that name the tensor.
class EntryReader {
 public:
  EntryReader(const std::string& path, const std::string& name, const Json& record)
      : path_(path), name_(name), record_(record) {
    if (!record.is_object()) {
      bad(std::string("expected an object with dtype, shape and data_offsets, got a JSON ") +
          record.type_name());
    }
  }

  const DtypeInfo& dtype() const {
    const Json& v = field("dtype");
    if (!v.is_string()) bad(std::string("'dtype' must be a string, got a JSON ") + v.type_name());
    const std::string& s = v.get_ref<const std::string&>();
    const DtypeInfo* d = find_dtype(s);
    if (d == nullptr) bad("unknown dtype " + in_quotes(s) + " (not a safetensors dtype)");
    return *d;
  }

  std::vector<int64_t> shape() const {
    const Json& v = field("shape");
    if (!v.is_array()) bad(std::string("'shape' must be an array, got a JSON ") + v.type_name());
    std::vector<int64_t> dims;
    dims.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      const std::string what = "shape[" + std::to_string(i) + "]";
      dims.push_back(static_cast<int64_t>(non_negative(v[i], what, std::numeric_limits<int64_t>::max())));
    }
    return dims;
  }

  // [begin, end) of the data, checked against `data_size`, the length of the data buffer.
  std::pair<uint64_t, uint64_t> offsets(uint64_t data_size) const {
    const Json& v = field("data_offsets");
    if (!v.is_array() || v.size() != 2) bad("'data_offsets' must be two integers [begin, end], got " + describe(v));
    const uint64_t limit = std::numeric_limits<uint64_t>::max();
    const uint64_t begin = non_negative(v[0], "data_offsets[0]", limit);
    const uint64_t end = non_negative(v[1], "data_offsets[1]", limit);
    if (begin > end) {
      bad("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
          "] have begin > end");
    }
    if (end > data_size) {
      bad("data_offsets end " + std::to_string(end) + " is past the end of the data buffer (" +
          std::to_string(data_size) + " bytes)");
    }
    return {begin, end};
  }

  [[noreturn]] void bad(const std::string& what) const {
    fail(path_, "tensor " + in_quotes(name_) + ": " + what);
  }

 private:
  const Json& field(const char* key) const {
    const auto it = record_.find(key);
    if (it == record_.end()) bad(std::string("missing field '") + key + "'");
    return *it;
  }

  uint64_t non_negative(const Json& v, const std::string& what, uint64_t limit) const {
    if (v.is_number_unsigned()) {
      const auto x = v.get<uint64_t>();
      if (x > limit) bad(what + " = " + std::to_string(x) + " is too large");
      return x;
    }
    if (v.is_number_integer()) bad(what + " is negative (" + std::to_string(v.get<int64_t>()) + ")");
    bad(what + " must be a non-negative integer, got " + describe(v));
  }

  const std::string& path_;
  const std::string& name_;
  const Json& record_;
};

// Bytes of `numel` elements of `bits` each, or nullopt on overflow or a partial last byte.
std::optional<uint64_t> data_bytes(std::span<const int64_t> shape, int bits) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(numel, d, &numel)) return std::nullopt;
  }
  uint64_t total_bits = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(numel), static_cast<uint64_t>(bits), &total_bits)) {
    return std::nullopt;
  }
  if (total_bits % 8 != 0) return std::nullopt;
  return total_bits / 8;
}

// The JSON header, parsed; duplicate top-level keys (which the parser would silently merge) are
// reported as an error.
Json parse_header(const std::string& path, const char* begin, const char* end) {
  std::optional<std::string> duplicate;
  std::set<std::string> seen;
  const Json::parser_callback_t watch = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (depth == 1 && event == Json::parse_event_t::key && !duplicate) {
      if (!seen.insert(parsed.get<std::string>()).second) duplicate = parsed.get<std::string>();
    }
    return true;
  };
  // nlohmann's lexer takes a NUL byte for the end of input and would ignore the rest; JSON allows
  // none outside strings, and strings must escape it.
  if (const void* nul = std::memchr(begin, '\0', static_cast<size_t>(end - begin))) {
    fail(path, "header is not valid JSON: NUL byte at header offset " +
                   std::to_string(static_cast<const char*>(nul) - begin));
  }
  Json header;
  try {
    header = Json::parse(begin, end, watch);
  } catch (const Json::exception& e) {
    // Drop nlohmann's "[json.exception.parse_error.101] " tag; keep its position and reason.
    std::string_view what = e.what();
    if (const size_t tag_end = what.find("] "); tag_end != std::string_view::npos) what.remove_prefix(tag_end + 2);
    std::string text;
    for (char c : what.substr(0, 200)) text += (c >= 0x20 && c < 0x7f) ? c : '?';
    fail(path, "header is not valid JSON: " + text);
  }
  if (!header.is_object()) fail(path, std::string("header must be a JSON object, got a JSON ") + header.type_name());
  if (duplicate) fail(path, "duplicate key " + in_quotes(*duplicate) + " in the header");
  return header;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const Json& value) {
  if (!value.is_object()) {
    fail(path, std::string("'__metadata__' must be an object of strings, got a JSON ") + value.type_name());
  }
  std::map<std::string, std::string> out;
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) {
      fail(path, "'__metadata__' value of " + in_quotes(key) + " must be a string, got a JSON " +
                     v.type_name());
    }
    out.emplace(key, v.get<std::string>());
  }
  return out;
}

// --- writing ------------------------------------------------------------------------------------

// Buffers small pieces (the elements of strided tensors) into large write() calls.
class Sink {
 public:
  Sink(int fd, const std::string& path) : fd_(fd), path_(path), buffer_(kCapacity) {}

  void put(const void* src, size_t n) {
    if (used_ + n > kCapacity) flush();
    if (n >= kCapacity) {
      write_fully(fd_, src, n, path_);
      return;
    }
    std::memcpy(buffer_.data() + used_, src, n);
    used_ += n;
  }

  void flush() {
    write_fully(fd_, buffer_.data(), used_, path_);
    used_ = 0;
  }

 private:
  static constexpr size_t kCapacity = size_t{1} << 20;
  int fd_;
  const std::string& path_;
  std::vector<std::byte> buffer_;
  size_t used_ = 0;
};

bool is_contiguous(const Layout& l) {
  int64_t expected = 1;
  for (int d = l.rank - 1; d >= 0; --d) {
    if (l.shape[d] != 1 && l.strides[d] != expected) return false;
    expected *= l.shape[d];
  }
  return true;
}

// Appends the elements of `v` to `sink` in row-major order, whatever its strides.
void put_row_major(Sink& sink, const TensorView& v) {
  const Layout& l = v.layout;
  const int64_t numel = l.numel();
  const auto esize = static_cast<size_t>(dtype_size(v.dtype));
  const auto* base = static_cast<const std::byte*>(v.data);
  if (numel == 0) return;
  if (is_contiguous(l)) {
    sink.put(base, static_cast<size_t>(numel) * esize);
    return;
  }
  // Walk the outer dims like an odometer; rows of the last dim are copied whole when dense.
  const int inner = l.rank - 1;
  std::array<int64_t, kMaxRank> index{};
  while (true) {
    int64_t offset = 0;
    for (int d = 0; d < inner; ++d) offset += index[d] * l.strides[d];
    const std::byte* row = base + offset * static_cast<int64_t>(esize);
    if (l.strides[inner] == 1) {
      sink.put(row, static_cast<size_t>(l.shape[inner]) * esize);
    } else {
      const int64_t step = l.strides[inner] * static_cast<int64_t>(esize);
      for (int64_t j = 0; j < l.shape[inner]; ++j) sink.put(row + j * step, esize);
    }
    int d = inner - 1;
    for (; d >= 0; --d) {
      if (++index[d] < l.shape[d]) break;
      index[d] = 0;
    }
    if (d < 0) break;
  }
}

// The validated byte count of one tensor to write.
uint64_t checked_bytes(const std::string& path, const NamedTensor& t) {
  const std::string what = "cannot write: tensor " + in_quotes(t.name);
  if (!t.tensor.present()) fail(path, what + " is absent (null data)");
  const Layout& l = t.tensor.layout;
  if (l.rank < 0 || l.rank > kMaxRank) {
    fail(path, what + ": rank " + std::to_string(l.rank) + " is outside [0, " + std::to_string(kMaxRank) + "]");
  }
  const std::span<const int64_t> shape(l.shape.data(), static_cast<size_t>(l.rank));
  for (int64_t d : shape) {
    if (d < 0) fail(path, what + ": shape " + shape_string(shape) + " has a negative dimension");
  }
  const std::optional<uint64_t> n = data_bytes(shape, static_cast<int>(dtype_size(t.tensor.dtype) * 8));
  if (!n || *n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    fail(path, what + ": shape " + shape_string(shape) + " is too large (byte count overflows)");
  }
  return *n;
}

}  // namespace

// --- SafetensorsFile ----------------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail(path, "cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail(path, "cannot stat: " + errno_text());
  if (S_ISDIR(st.st_mode)) fail(path, "is a directory, not a .safetensors file");
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < kLengthBytes) {
    fail(path, "truncated: file has " + std::to_string(file_size) +
                   " bytes, fewer than the 8-byte header length");
  }

  void* m = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (m == MAP_FAILED) fail(path, "cannot map: " + errno_text());
  map_ = static_cast<const std::byte*>(m);
  map_size_ = file_size;
  // The destructor does not run when the constructor throws: unmap here.
  try {
    uint64_t header_len = 0;
    for (size_t i = 0; i < kLengthBytes; ++i) header_len |= std::to_integer<uint64_t>(map_[i]) << (8 * i);
    if (header_len > kMaxHeaderLen) {
      fail(path, "header length " + std::to_string(header_len) + " is implausibly large (limit " +
                     std::to_string(kMaxHeaderLen) + ")");
    }
    if (header_len > file_size - kLengthBytes) {
      fail(path, "truncated: header length " + std::to_string(header_len) + " exceeds the " +
                     std::to_string(file_size - kLengthBytes) + " bytes after the length field");
    }
    data_start_ = kLengthBytes + header_len;
    const uint64_t data_size = file_size - data_start_;
    const auto* text = reinterpret_cast<const char*>(map_ + kLengthBytes);
    const Json header = parse_header(path, text, text + header_len);

    for (const auto& [name, record] : header.items()) {
      if (name == kMetadataKey) {
        metadata_ = parse_metadata(path, record);
        continue;
      }
      const EntryReader reader(path, name, record);
      Entry e;
      e.name = name;
      const DtypeInfo& dtype = reader.dtype();
      e.dtype = std::string(dtype.name);
      e.bits = dtype.bits;
      e.shape = reader.shape();
      std::tie(e.begin, e.end) = reader.offsets(data_size);
      const std::optional<uint64_t> need = data_bytes(e.shape, e.bits);
      if (!need) {
        reader.bad("shape " + shape_string(e.shape) + " of " + e.dtype +
                   " is too large (byte count overflows) or does not fill whole bytes");
      }
      if (e.end - e.begin != *need) {
        reader.bad("data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                   "] hold " + std::to_string(e.end - e.begin) + " bytes, but dtype " + e.dtype +
                   " and shape " + shape_string(e.shape) + " need " + std::to_string(*need));
      }
      entries_.push_back(std::move(e));
    }

    std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    // Sorted by begin, the first overlap is between a tensor and the previous non-empty one.
    const Entry* previous = nullptr;
    for (const Entry& e : entries_) {
      if (e.begin == e.end) continue;
      if (previous != nullptr && e.begin < previous->end) {
        fail(path, "tensors " + in_quotes(previous->name) + " [" + std::to_string(previous->begin) + ", " +
                       std::to_string(previous->end) + ") and " + in_quotes(e.name) + " [" +
                       std::to_string(e.begin) + ", " + std::to_string(e.end) + ") overlap");
      }
      previous = &e;
    }
    for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].name, i);
  } catch (...) {
    unmap();
    throw;
  }
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_size_(std::exchange(other.map_size_, 0)),
      data_start_(other.data_start_),
      entries_(std::move(other.entries_)),
      index_(std::move(other.index_)),
      metadata_(std::move(other.metadata_)) {
  other.entries_.clear();
  other.index_.clear();
}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    data_start_ = other.data_start_;
    entries_ = std::move(other.entries_);
    index_ = std::move(other.index_);
    metadata_ = std::move(other.metadata_);
    other.entries_.clear();
    other.index_.clear();
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() { unmap(); }

void SafetensorsFile::unmap() noexcept {
  if (map_ != nullptr) ::munmap(const_cast<std::byte*>(map_), map_size_);
  map_ = nullptr;
  map_size_ = 0;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_) out.push_back(e.name);
  return out;
}

bool SafetensorsFile::contains(std::string_view name) const { return index_.find(name) != index_.end(); }

const SafetensorsFile::Entry& SafetensorsFile::entry(std::string_view name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) fail(path_, "no tensor named " + in_quotes(name));
  return entries_[it->second];
}

TensorView SafetensorsFile::tensor(std::string_view name) const {
  const Entry& e = entry(name);
  const std::string what = "tensor " + in_quotes(e.name) + ": ";
  const std::optional<DType> dtype = find_dtype(e.dtype)->dtype;
  if (!dtype) fail(path_, what + "dtype " + e.dtype + " is not supported; expected F32, F16, BF16 or BOOL");
  if (e.shape.size() > static_cast<size_t>(kMaxRank)) {
    fail(path_, what + "rank " + std::to_string(e.shape.size()) + " (shape " + shape_string(e.shape) +
                    ") exceeds the maximum rank " + std::to_string(kMaxRank));
  }
  const std::byte* data = map_ + data_start_ + e.begin;
  const int64_t esize = dtype_size(*dtype);
  // An empty tensor is never read through, so its address may be anything.
  if (e.end > e.begin && reinterpret_cast<uintptr_t>(data) % static_cast<uintptr_t>(esize) != 0) {
    fail(path_, what + "data at file offset " + std::to_string(data_start_ + e.begin) +
                    " is not aligned to its " + std::to_string(esize) +
                    "-byte elements (the writer did not order tensors by element size)");
  }
  TensorView v;
  v.data = data;
  v.dtype = *dtype;
  v.layout.rank = static_cast<int>(e.shape.size());
  // Unsigned: with a zero dim elsewhere (numel 0) the running product may wrap, as in
  // Layout::contiguous; no element is ever addressed through such a stride.
  uint64_t stride = 1;
  for (int d = v.layout.rank - 1; d >= 0; --d) {
    v.layout.shape[d] = e.shape[d];
    v.layout.strides[d] = static_cast<int64_t>(stride);
    stride *= static_cast<uint64_t>(e.shape[d]);
  }
  return v;
}

// --- write_safetensors ---------------------------------------------------------------------------

void write_safetensors(const std::string& path, std::span<const NamedTensor> tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<uint64_t> bytes;
  bytes.reserve(tensors.size());
  std::set<std::string_view> seen;
  for (const NamedTensor& t : tensors) {
    if (t.name == kMetadataKey) {
      fail(path, "cannot write: tensor name '__metadata__' is reserved for the metadata");
    }
    if (!seen.insert(t.name).second) fail(path, "cannot write: tensor name " + in_quotes(t.name) + " appears twice");
    bytes.push_back(checked_bytes(path, t));
  }

  // Larger elements first (stably): each offset is then a sum of sizes of elements at least as
  // large, hence a multiple of the element size, and the data buffer starts at a multiple of 8.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].tensor.dtype) > dtype_size(tensors[b].tensor.dtype);
  });

  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  uint64_t offset = 0;
  for (size_t i : order) {
    const TensorView& v = tensors[i].tensor;
    OrderedJson record = OrderedJson::object();
    record["dtype"] = file_dtype_name(v.dtype);
    record["shape"] = std::vector<int64_t>(v.layout.shape.begin(), v.layout.shape.begin() + v.layout.rank);
    uint64_t end = 0;
    if (__builtin_add_overflow(offset, bytes[i], &end)) fail(path, "cannot write: total data size overflows");
    record["data_offsets"] = {offset, end};
    header[tensors[i].name] = std::move(record);
    offset = end;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const OrderedJson::exception&) {
    fail(path, "cannot write: a tensor name or metadata string is not valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::array<unsigned char, kLengthBytes> length{};
  for (size_t i = 0; i < kLengthBytes; ++i) length[i] = static_cast<unsigned char>(uint64_t{text.size()} >> (8 * i));

  write_atomically(path, [&](int fd) {
    Sink sink(fd, path);
    sink.put(length.data(), length.size());
    sink.put(text.data(), text.size());
    for (size_t i : order) put_row_major(sink, tensors[i].tensor);
    sink.flush();
  });
}

}  // namespace xattn
