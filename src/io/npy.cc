// NumPy .npy reader and writer. Format: "\x93NUMPY", major, minor, a little-endian header length
// (u16 for v1, u32 for v2/v3), a Python dict literal {'descr', 'fortran_order', 'shape'}, then the
// raw array bytes. Every field read from the file is treated as hostile: sizes are checked against
// the file's real length before anything is allocated or copied.

#include "xattn/npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

#include "io/file_io.h"
#include "xattn/error.h"

namespace xattn {
namespace {

using io::errno_text;
using io::fail;
using io::Fd;
using io::read_fully;
using io::write_atomically;
using io::write_fully;

constexpr std::string_view kMagic = "\x93NUMPY";
// Prefix = magic + 2 version bytes + header length (2 bytes in v1, 4 in v2/v3).
constexpr size_t kVersionEnd = 8;
// numpy itself refuses headers above 10 kB unless told otherwise; a dict of three keys with at
// most four dims never needs more, so anything bigger is damage, not data.
constexpr uint32_t kMaxHeaderLen = 1u << 16;

std::string quoted(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    // Keep messages one printable line even when the file holds binary junk.
    if (c >= 0x20 && c < 0x7f) out += c;
    else out += '?';
  }
  return out + "'";
}

// --- header dict parsing ------------------------------------------------------------------------
// The header is a Python literal written by numpy's repr(); we accept exactly the grammar that
// can appear there (strings, True/False, tuples of non-negative integers) and nothing else.

struct Header {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& path) : s_(text), path_(path) {}

  Header parse() {
    Header h;
    bool seen_descr = false, seen_order = false, seen_shape = false;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') { ++pos_; break; }
      const std::string key = string_literal();
      expect(':');
      if (key == "descr") {
        if (seen_descr) bad("duplicate key 'descr'");
        seen_descr = true;
        skip_space();
        if (peek() != '\'' && peek() != '"') {
          bad("unsupported dtype (structured or non-string 'descr'; expected float32 '<f4', "
              "float16 '<f2' or bool '|b1')");
        }
        h.descr = string_literal();
      } else if (key == "fortran_order") {
        if (seen_order) bad("duplicate key 'fortran_order'");
        seen_order = true;
        h.fortran_order = boolean();
      } else if (key == "shape") {
        if (seen_shape) bad("duplicate key 'shape'");
        seen_shape = true;
        h.shape = shape_tuple();
      } else {
        bad("unexpected key " + quoted(key));
      }
      skip_space();
      if (peek() == ',') { ++pos_; continue; }
      expect('}');
      break;
    }
    skip_space();
    if (pos_ != s_.size()) bad("unexpected text after the header dict");
    if (!seen_descr) bad("missing key 'descr'");
    if (!seen_order) bad("missing key 'fortran_order'");
    if (!seen_shape) bad("missing key 'shape'");
    return h;
  }

 private:
  [[noreturn]] void bad(const std::string& what) const { fail(path_, "malformed .npy header: " + what); }

  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }

  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  void expect(char c) {
    skip_space();
    if (peek() != c) {
      bad(std::string("expected '") + c + "' at offset " + std::to_string(pos_) +
          (pos_ < s_.size() ? ", found " + quoted(s_.substr(pos_, 1)) : std::string(", found end")));
    }
    ++pos_;
  }

  std::string string_literal() {
    skip_space();
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a quoted string at offset " + std::to_string(pos_));
    const size_t end = s_.find(q, pos_ + 1);
    if (end == std::string_view::npos) bad("unterminated string");
    std::string out(s_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return out;
  }

  bool boolean() {
    skip_space();
    if (s_.substr(pos_, 4) == "True") { pos_ += 4; return true; }
    if (s_.substr(pos_, 5) == "False") { pos_ += 5; return false; }
    bad("'fortran_order' must be True or False");
  }

  int64_t integer() {
    skip_space();
    if (peek() == '-') bad("negative dimension in 'shape'");
    if (peek() < '0' || peek() > '9') bad("expected an integer in 'shape'");
    int64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      const int digit = peek() - '0';
      if (v > (std::numeric_limits<int64_t>::max() - digit) / 10) bad("dimension too large in 'shape'");
      v = v * 10 + digit;
      ++pos_;
    }
    // Python 2 era numpy wrote longs as "3L".
    if (peek() == 'L') ++pos_;
    return v;
  }

  std::vector<int64_t> shape_tuple() {
    std::vector<int64_t> dims;
    expect('(');
    while (true) {
      skip_space();
      if (peek() == ')') { ++pos_; break; }
      // Keep a hostile "(1,1,1,...)" from growing the vector without bound; the rank check
      // with its clearer message happens after parsing.
      if (dims.size() > 64) bad("too many dimensions in 'shape'");
      dims.push_back(integer());
      skip_space();
      if (peek() == ',') { ++pos_; continue; }
      expect(')');
      break;
    }
    return dims;
  }

  std::string_view s_;
  const std::string& path_;
  size_t pos_ = 0;
};

std::string shape_string(std::span<const int64_t> shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    s += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) s += shape.size() == 1 ? "," : ", ";
  }
  return s + ")";
}

DType parse_descr(const std::string& descr, const std::string& path) {
  if (descr == "<f4") return DType::kF32;
  if (descr == "<f2") return DType::kF16;
  if (descr == "|b1") return DType::kBool;
  if (!descr.empty() && descr[0] == '>') {
    fail(path, "big-endian dtype " + quoted(descr) +
                   " is not supported (convert with arr.astype(arr.dtype.newbyteorder('<')))");
  }
  fail(path, "unsupported dtype " + quoted(descr) +
                 " (expected float32 '<f4', float16 '<f2' or bool '|b1')");
}

const char* descr_of(DType t) {
  switch (t) {
    case DType::kF32: return "<f4";
    case DType::kF16: return "<f2";
    case DType::kBool: return "|b1";
    case DType::kBF16: break;
  }
  return nullptr;
}

// numel · itemsize, or nullopt when it does not fit in int64 (absurd shapes in hostile headers).
std::optional<int64_t> byte_count(std::span<const int64_t> shape, int64_t itemsize) {
  int64_t n = itemsize;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (__builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}


}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

TensorView NpyArray::view() const {
  if (shape.size() > static_cast<size_t>(kMaxRank)) {
    throw Error("NpyArray::view: rank " + std::to_string(shape.size()) + " exceeds " +
                std::to_string(kMaxRank));
  }
  // An empty array has no bytes, but a null pointer would read as "argument absent";
  // any non-null address is safe because nothing is ever read from it.
  static const std::byte kEmpty{};
  TensorView v;
  v.data = bytes.empty() ? &kEmpty : bytes.data();
  v.dtype = dtype;
  v.layout.rank = static_cast<int>(shape.size());
  // Unsigned: with a zero dim elsewhere (numel 0, which read_npy accepts for any other dims)
  // the running product may wrap, as in Layout::contiguous; no element is ever addressed
  // through such a stride.
  uint64_t stride = 1;
  const int rank = v.layout.rank;
  for (int i = 0; i < rank; ++i) {
    // C order: the last index is densest. Fortran order: the first is, so the strides are the
    // C strides of the reversed shape, read backwards.
    const int d = fortran_order ? i : rank - 1 - i;
    v.layout.shape[d] = shape[d];
    v.layout.strides[d] = static_cast<int64_t>(stride);
    stride *= static_cast<uint64_t>(shape[d]);
  }
  return v;
}

NpyArray read_npy(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail(path, "cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail(path, "cannot stat: " + errno_text());
  if (S_ISDIR(st.st_mode)) fail(path, "is a directory, not a .npy file");
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  const auto file_size = static_cast<uint64_t>(st.st_size);

  unsigned char prefix[12] = {};
  const size_t got = read_fully(fd.get(), prefix, kVersionEnd, path);
  if (got == 0) fail(path, "empty file, not a .npy file");
  if (got < kMagic.size() || std::memcmp(prefix, kMagic.data(), kMagic.size()) != 0) {
    fail(path, "not a .npy file (bad magic; expected \\x93NUMPY)");
  }
  if (got < kVersionEnd) fail(path, "truncated: file ends inside the .npy prefix");
  const int major = prefix[6], minor = prefix[7];
  size_t len_bytes = 0;
  if (major == 1) len_bytes = 2;
  else if (major == 2 || major == 3) len_bytes = 4;
  else fail(path, "unsupported .npy version " + std::to_string(major) + "." + std::to_string(minor));
  if (read_fully(fd.get(), prefix + kVersionEnd, len_bytes, path) < len_bytes) {
    fail(path, "truncated: file ends inside the .npy prefix");
  }
  uint32_t header_len = uint32_t{prefix[8]} | (uint32_t{prefix[9]} << 8);
  if (len_bytes == 4) header_len |= (uint32_t{prefix[10]} << 16) | (uint32_t{prefix[11]} << 24);
  const uint64_t data_start = kVersionEnd + len_bytes + uint64_t{header_len};
  if (header_len > kMaxHeaderLen) {
    fail(path, "malformed .npy header: header length " + std::to_string(header_len) +
                   " is implausibly large");
  }
  if (data_start > file_size) {
    fail(path, "truncated: header says " + std::to_string(header_len) + " bytes of header, file has " +
                   std::to_string(file_size - kVersionEnd - len_bytes));
  }

  std::string header(header_len, '\0');
  if (read_fully(fd.get(), header.data(), header_len, path) < header_len) {
    fail(path, "truncated: file ends inside the header");
  }
  if (header.find('\0') != std::string::npos) fail(path, "malformed .npy header: contains a NUL byte");

  const Header h = HeaderParser(header, path).parse();
  NpyArray a;
  a.dtype = parse_descr(h.descr, path);
  a.fortran_order = h.fortran_order;
  a.shape = h.shape;
  if (a.shape.size() > static_cast<size_t>(kMaxRank)) {
    fail(path, "rank " + std::to_string(a.shape.size()) + " (shape " + shape_string(a.shape) +
                   ") exceeds the maximum rank " + std::to_string(kMaxRank));
  }
  const std::optional<int64_t> want = byte_count(a.shape, dtype_size(a.dtype));
  if (!want) fail(path, "shape " + shape_string(a.shape) + " is too large (byte count overflows)");
  const uint64_t have = file_size - data_start;
  if (have < static_cast<uint64_t>(*want)) {
    fail(path, "truncated: header says " + std::to_string(*want) + " bytes of data, file has " +
                   std::to_string(have));
  }
  if (have > static_cast<uint64_t>(*want)) {
    fail(path, "trailing garbage: header says " + std::to_string(*want) + " bytes of data, file has " +
                   std::to_string(have));
  }

  a.bytes.resize(static_cast<size_t>(*want));
  if (read_fully(fd.get(), a.bytes.data(), a.bytes.size(), path) < a.bytes.size()) {
    // The file shrank between fstat and read.
    fail(path, "truncated: file ended while reading the data");
  }
  return a;
}

void write_npy(const std::string& path, DType dtype, std::span<const int64_t> shape,
               const void* data) {
  const char* descr = descr_of(dtype);
  if (descr == nullptr) {
    fail(path, std::string("cannot write dtype ") + std::string(dtype_name(dtype)) +
                   " to .npy (numpy has no such dtype)");
  }
  const std::optional<int64_t> nbytes = byte_count(shape, dtype_size(dtype));
  if (!nbytes) fail(path, "cannot write shape " + shape_string(shape) + " (negative or too large)");
  if (data == nullptr && *nbytes > 0) fail(path, "cannot write: data is null");

  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " +
                       shape_string(shape) + ", }";
  // Pad with spaces so the data starts on a 64-byte boundary (numpy's own convention), then '\n'.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  if (header.size() > 0xffff) fail(path, "cannot write: header too long for .npy v1.0");

  std::string file = std::string(kMagic) + '\x01' + '\x00';
  file += static_cast<char>(header.size() & 0xff);
  file += static_cast<char>(header.size() >> 8);
  file += header;

  write_atomically(path, [&](int fd) {
    write_fully(fd, file.data(), file.size(), path);
    write_fully(fd, data, static_cast<size_t>(*nbytes), path);
  });
}

}  // namespace xattn
