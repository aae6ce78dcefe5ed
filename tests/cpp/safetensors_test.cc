// safetensors reading and writing: round trips from any strides, the exact bytes we write, and one
// test per kind of damaged file (each must give an xattn::Error naming the file and the problem).

#include "xattn/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "temp_dir_test.h"
#include "xattn/error.h"
#include "xattn/half.h"

namespace xattn {
namespace {

namespace fs = std::filesystem;

// Runs `fn` and checks that it throws xattn::Error whose message contains every `parts` entry.
::testing::AssertionResult throws_error_with(const std::function<void()>& fn,
                                             const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) {
      if (msg.find(p) == std::string::npos) {
        return ::testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << p << "\"";
      }
    }
    if (msg.find('\n') != std::string::npos) {
      return ::testing::AssertionFailure() << "message \"" << msg << "\" spans several lines";
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-xattn exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

std::string u64_le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A .safetensors image: length, `header` (padded with spaces to a multiple of 8 unless `pad` is
// false), then `data`.
std::string st_image(std::string header, const std::string& data, bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  return u64_le(header.size()) + header + data;
}

template <typename T>
std::string raw_bytes(const std::vector<T>& v) {
  std::string s(v.size() * sizeof(T), '\0');
  if (!s.empty()) std::memcpy(s.data(), v.data(), s.size());
  return s;
}

std::string view_bytes(const TensorView& v) {
  const auto n = static_cast<size_t>(v.layout.numel() * dtype_size(v.dtype));
  return std::string(static_cast<const char*>(v.data), n);
}

// The elements of `v` in row-major order, gathered by plain index arithmetic.
std::string gather(const TensorView& v) {
  std::array<int64_t, 4> shape{1, 1, 1, 1}, strides{0, 0, 0, 0};
  const int pad = 4 - v.rank();
  for (int d = 0; d < v.rank(); ++d) {
    shape[pad + d] = v.size(d);
    strides[pad + d] = v.stride(d);
  }
  const int64_t esize = dtype_size(v.dtype);
  const auto* base = static_cast<const char*>(v.data);
  std::string out;
  for (int64_t a = 0; a < shape[0]; ++a)
    for (int64_t b = 0; b < shape[1]; ++b)
      for (int64_t c = 0; c < shape[2]; ++c)
        for (int64_t d = 0; d < shape[3]; ++d) {
          const int64_t off = a * strides[0] + b * strides[1] + c * strides[2] + d * strides[3];
          out.append(base + off * esize, static_cast<size_t>(esize));
        }
  return out;
}

std::vector<float> iota_f32(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i) - 3.5f;
  return v;
}

// One tensor record of a header.
std::string record(const std::string& name, const std::string& dtype, const std::string& shape,
                   const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":" + offsets + "}";
}

class SafetensorsTest : public xattn::test_files::TempDirTest {
 protected:
  // Writes a file whose header is `header` (plus padding) and whose data buffer is `data`, and
  // checks that opening it throws an Error naming the file and containing `parts`.
  ::testing::AssertionResult open_fails(const std::string& header, const std::string& data,
                                        std::initializer_list<std::string> parts) const {
    const std::string p = write_raw("bad.safetensors", st_image(header, data));
    std::vector<std::string> all(parts);
    all.push_back(p + ": ");
    try {
      SafetensorsFile f(p);
    } catch (const Error& e) {
      const std::string msg = e.what();
      for (const std::string& part : all) {
        if (msg.find(part) == std::string::npos) {
          return ::testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << part << "\"";
        }
      }
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "opened without error: " << header;
  }

};

// --- round trips ----------------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripF32) {
  const std::vector<float> a = iota_f32(24);
  const std::vector<float> b = {7.0f, -1.0f};
  const NamedTensor tensors[] = {{"a", view(a.data(), {2, 3, 4})}, {"b", view(b.data(), {2})}};
  write_safetensors(path("f.safetensors"), tensors);

  const SafetensorsFile f(path("f.safetensors"));
  EXPECT_EQ(f.path(), path("f.safetensors"));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(f.contains("a"));
  EXPECT_FALSE(f.contains("c"));
  EXPECT_TRUE(f.metadata().empty());
  const TensorView v = f.tensor("a");
  EXPECT_EQ(v.dtype, DType::kF32);
  ASSERT_EQ(v.rank(), 3);
  EXPECT_EQ(v.size(0), 2);
  EXPECT_EQ(v.size(1), 3);
  EXPECT_EQ(v.size(2), 4);
  EXPECT_EQ(v.stride(0), 12);
  EXPECT_EQ(v.stride(1), 4);
  EXPECT_EQ(v.stride(2), 1);
  EXPECT_EQ(view_bytes(v), raw_bytes(a));
  EXPECT_EQ(view_bytes(f.tensor("b")), raw_bytes(b));
}

TEST_F(SafetensorsTest, RoundTripEachDtypeAndAlignment) {
  std::vector<uint16_t> h, bf;
  for (float x : {0.0f, -1.5f, 65504.0f, 3.140625f, -0.0f, 1e-7f}) {
    h.push_back(float_to_f16(x));
    bf.push_back(float_to_bf16(x * 1e10f));
  }
  const std::vector<uint8_t> mask = {1, 0, 0, 1, 1};
  const std::vector<float> f = iota_f32(3);
  const std::vector<uint16_t> h2 = {float_to_f16(2.0f)};
  // Mixed sizes in an order that would misalign the 4- and 2-byte tensors if kept as given.
  const NamedTensor tensors[] = {
      {"mask", view(mask.data(), DType::kBool, Layout::contiguous({5}))},
      {"half", view(h.data(), DType::kF16, Layout::contiguous({2, 3}))},
      {"float", view(f.data(), {3})},
      {"brain", view(bf.data(), DType::kBF16, Layout::contiguous({3, 2}))},
      {"half2", view(h2.data(), DType::kF16, Layout::contiguous({1}))},
  };
  write_safetensors(path("d.safetensors"), tensors);

  const SafetensorsFile file(path("d.safetensors"));
  // Descending element size, given order within a size.
  EXPECT_EQ(file.names(), (std::vector<std::string>{"float", "half", "brain", "half2", "mask"}));
  const struct {
    const char* name;
    DType dtype;
    std::string bytes;
  } want[] = {{"mask", DType::kBool, raw_bytes(mask)}, {"half", DType::kF16, raw_bytes(h)},
              {"float", DType::kF32, raw_bytes(f)},   {"brain", DType::kBF16, raw_bytes(bf)},
              {"half2", DType::kF16, raw_bytes(h2)}};
  for (const auto& w : want) {
    const TensorView v = file.tensor(w.name);
    EXPECT_EQ(v.dtype, w.dtype) << w.name;
    EXPECT_EQ(view_bytes(v), w.bytes) << w.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data) % dtype_size(v.dtype), 0u) << w.name;
  }
  const TensorView brain = file.tensor("brain");
  EXPECT_EQ(brain.size(0), 3);
  EXPECT_EQ(brain.size(1), 2);
  EXPECT_NE(slurp(path("d.safetensors")).find("\"dtype\":\"BOOL\""), std::string::npos);
}

TEST_F(SafetensorsTest, StridedSourcesAreWrittenRowMajor) {
  const std::vector<float> src = iota_f32(24);
  const std::vector<uint16_t> half = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<uint8_t> mask = {1, 0, 1, 1, 0, 0, 1, 0};
  const NamedTensor tensors[] = {
      // [3, 4, 2] transposed out of a [2, 3, 4] buffer.
      {"transposed", view(src.data(), DType::kF32, Layout::strided({3, 4, 2}, {4, 1, 12}))},
      // Every dim reversed: starts at the last element.
      {"reversed", view(src.data() + 23, DType::kF32, Layout::strided({2, 3, 4}, {-12, -4, -1}))},
      // A row broadcast over 3 rows.
      {"broadcast", view(src.data(), DType::kF32, Layout::strided({3, 4}, {0, 1}))},
      // Rank 4, no dim dense.
      {"permuted", view(src.data(), DType::kF32, Layout::strided({2, 2, 3, 2}, {1, 2, 4, 12}))},
      {"scalar", view(src.data() + 5, DType::kF32, Layout::strided({}, {}))},
      {"half", view(half.data() + 1, DType::kF16, Layout::strided({2, 2}, {4, 2}))},
      {"mask", view(mask.data() + 7, DType::kBool, Layout::strided({4}, {-2}))},
  };
  write_safetensors(path("s.safetensors"), tensors);

  const SafetensorsFile f(path("s.safetensors"));
  for (const NamedTensor& t : tensors) {
    const TensorView v = f.tensor(t.name);
    ASSERT_EQ(v.rank(), t.tensor.rank()) << t.name;
    for (int d = 0; d < v.rank(); ++d) EXPECT_EQ(v.size(d), t.tensor.size(d)) << t.name;
    EXPECT_EQ(view_bytes(v), gather(t.tensor)) << t.name;
  }
  // Spot checks against values worked out by hand.
  const auto* reversed = static_cast<const float*>(f.tensor("reversed").data);
  EXPECT_EQ(reversed[0], src[23]);
  EXPECT_EQ(reversed[23], src[0]);
  const auto* transposed = static_cast<const float*>(f.tensor("transposed").data);
  EXPECT_EQ(transposed[1], src[12]);  // element [0, 0, 1]
  EXPECT_EQ(transposed[2], src[1]);   // element [0, 1, 0]
  const auto* m = static_cast<const uint8_t*>(f.tensor("mask").data);
  EXPECT_EQ((std::vector<uint8_t>(m, m + 4)), (std::vector<uint8_t>{0, 0, 1, 0}));  // mask[7], mask[5], mask[3], mask[1]
}

TEST_F(SafetensorsTest, LargeStridedTensorPassesTheWriteBuffer) {
  // 600 x 600 floats (1.4 MB) read column by column: more than the writer's 1 MiB buffer.
  const int64_t n = 600;
  std::vector<float> src(static_cast<size_t>(n * n));
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i);
  const TensorView transposed = view(src.data(), DType::kF32, Layout::strided({n, n}, {1, n}));
  const NamedTensor tensors[] = {{"t", transposed}, {"c", view(src.data(), {n, n})}};
  write_safetensors(path("big.safetensors"), tensors);
  const SafetensorsFile f(path("big.safetensors"));
  EXPECT_EQ(view_bytes(f.tensor("t")), gather(transposed));
  EXPECT_EQ(view_bytes(f.tensor("c")), raw_bytes(src));
}

TEST_F(SafetensorsTest, ZeroSizeAndScalarTensors) {
  const float one = 1.0f;
  const std::vector<float> two = {2.0f, 3.0f};
  static const float kNothing = 0.0f;
  const NamedTensor tensors[] = {
      {"empty", view(&kNothing, {0, 3})},
      {"scalar", view(&one, DType::kF32, Layout::strided({}, {}))},
      {"two", view(two.data(), {2})},
  };
  write_safetensors(path("z.safetensors"), tensors);
  const SafetensorsFile f(path("z.safetensors"));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"empty", "scalar", "two"}));
  const TensorView e = f.tensor("empty");
  EXPECT_TRUE(e.present());
  ASSERT_EQ(e.rank(), 2);
  EXPECT_EQ(e.size(0), 0);
  EXPECT_EQ(e.size(1), 3);
  EXPECT_EQ(e.layout.numel(), 0);
  const TensorView s = f.tensor("scalar");
  EXPECT_EQ(s.rank(), 0);
  EXPECT_EQ(*static_cast<const float*>(s.data), 1.0f);
  EXPECT_EQ(view_bytes(f.tensor("two")), raw_bytes(two));
}

TEST_F(SafetensorsTest, MetadataRoundTrip) {
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "ünïcode \"quoted\"\n"}};
  const float x = 1.0f;
  const NamedTensor tensors[] = {{"x", view(&x, {1})}};
  write_safetensors(path("m.safetensors"), tensors, meta);
  const SafetensorsFile f(path("m.safetensors"));
  EXPECT_EQ(f.metadata(), meta);
  EXPECT_EQ(f.names(), std::vector<std::string>{"x"});
}

TEST_F(SafetensorsTest, EmptyFileRoundTrip) {
  write_safetensors(path("e.safetensors"), {});
  const SafetensorsFile f(path("e.safetensors"));
  EXPECT_TRUE(f.names().empty());
  EXPECT_TRUE(f.metadata().empty());
}

TEST_F(SafetensorsTest, MovedFileKeepsViewsValid) {
  const std::vector<float> a = iota_f32(6);
  const NamedTensor tensors[] = {{"a", view(a.data(), {6})}};
  write_safetensors(path("mv.safetensors"), tensors);
  SafetensorsFile f(path("mv.safetensors"));
  const TensorView before = f.tensor("a");
  SafetensorsFile g(std::move(f));
  EXPECT_EQ(g.tensor("a").data, before.data);
  EXPECT_EQ(view_bytes(before), raw_bytes(a));
  SafetensorsFile h(path("mv.safetensors"));
  h = std::move(g);
  EXPECT_EQ(h.tensor("a").data, before.data);
  EXPECT_EQ(view_bytes(before), raw_bytes(a));
}

TEST_F(SafetensorsTest, ReadsTensorsListedInAnyOrderAndWithGaps) {
  // Header order differs from data order; 4 bytes between the tensors belong to neither.
  const std::vector<float> data = {1, 2, 9, 3};
  const std::string header = "{" + record("late", "F32", "[1]", "[12,16]") + "," +
                             record("early", "F32", "[2]", "[0,8]") + "}";
  const std::string p = write_raw("order.safetensors", st_image(header, raw_bytes(data)));
  const SafetensorsFile f(p);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"early", "late"}));
  EXPECT_EQ(*static_cast<const float*>(f.tensor("late").data), 3.0f);
}

// --- exact bytes ----------------------------------------------------------------------------------

TEST_F(SafetensorsTest, WrittenBytesMatchTheFormat) {
  // One F32 tensor [2] = {1, -2}: 54 bytes of JSON, 2 spaces of padding to 56, then the floats
  // little-endian (1.0f = 0x3f800000, -2.0f = 0xc0000000).
  const float x[2] = {1.0f, -2.0f};
  const NamedTensor tensors[] = {{"a", view(x, {2})}};
  write_safetensors(path("a.safetensors"), tensors);
  const std::string json = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_EQ(json.size(), 54u);
  const std::string want = std::string("\x38\0\0\0\0\0\0\0", 8) + json + "  " +
                           std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8);
  EXPECT_EQ(slurp(path("a.safetensors")), want);
}

TEST_F(SafetensorsTest, WrittenBytesMatchTheReferenceImplementation) {
  // The byte vectors of the reference implementation's own serialization tests.
  const std::vector<float> data = {0, 1, 2, 3, 4, 5};
  const NamedTensor tensors[] = {{"attn.0", view(data.data(), {1, 2, 3})}};
  write_safetensors(path("r.safetensors"), tensors);
  const unsigned char want[] = {
      64,  0,   0,   0,   0,   0,   0,   0,   123, 34,  97,  116, 116, 110, 46,  48,  34,  58,
      123, 34,  100, 116, 121, 112, 101, 34,  58,  34,  70,  51,  50,  34,  44,  34,  115, 104,
      97,  112, 101, 34,  58,  91,  49,  44,  50,  44,  51,  93,  44,  34,  100, 97,  116, 97,
      95,  111, 102, 102, 115, 101, 116, 115, 34,  58,  91,  48,  44,  50,  52,  93,  125, 125,
      0,   0,   0,   0,   0,   0,   128, 63,  0,   0,   0,   64,  0,   0,   64,  64,  0,   0,
      128, 64,  0,   0,   160, 64};
  EXPECT_EQ(slurp(path("r.safetensors")), std::string(reinterpret_cast<const char*>(want), sizeof(want)));

  write_safetensors(path("empty.safetensors"), {});
  EXPECT_EQ(slurp(path("empty.safetensors")), u64_le(8) + "{}      ");

  write_safetensors(path("meta.safetensors"), {}, {{"framework", "pt"}});
  EXPECT_EQ(slurp(path("meta.safetensors")), u64_le(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
}

// --- damaged files ----------------------------------------------------------------------------------

TEST_F(SafetensorsTest, MissingFile) {
  const std::string p = path("nope.safetensors");
  EXPECT_TRUE(throws_error_with([&] { SafetensorsFile f(p); }, {p, "cannot open"}));
}

TEST_F(SafetensorsTest, DirectoryIsNotAFile) {
  EXPECT_TRUE(throws_error_with([&] { SafetensorsFile f(dir_.string()); }, {dir_.string(), "directory"}));
}

TEST_F(SafetensorsTest, ShorterThanTheLengthField) {
  for (size_t n : {0, 1, 7}) {
    const std::string p = write_raw("short.safetensors", std::string(n, '\x01'));
    EXPECT_TRUE(throws_error_with([&] { SafetensorsFile f(p); },
                                  {p, "file has " + std::to_string(n) + " bytes, fewer than the 8-byte header length"}));
  }
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  const std::string p = write_raw("hlen.safetensors", u64_le(100) + "{}");
  EXPECT_TRUE(throws_error_with([&] { SafetensorsFile f(p); },
                                {p, "truncated: header length 100 exceeds the 2 bytes after the length field"}));
}

TEST_F(SafetensorsTest, AbsurdHeaderLength) {
  for (uint64_t n : {uint64_t{1} << 40, ~uint64_t{0}}) {
    const std::string p = write_raw("huge.safetensors", u64_le(n) + "{}");
    EXPECT_TRUE(throws_error_with([&] { SafetensorsFile f(p); },
                                  {p, "header length " + std::to_string(n), "implausibly large"}));
  }
}

TEST_F(SafetensorsTest, HeaderIsNotJson) {
  EXPECT_TRUE(open_fails("{\"a\": ", "", {"header is not valid JSON"}));
  EXPECT_TRUE(open_fails("", "", {"header is not valid JSON"}));
  EXPECT_TRUE(open_fails("{} trailing", "", {"header is not valid JSON"}));
  EXPECT_TRUE(open_fails(std::string("{\"a\xff\": 1}"), "", {"header is not valid JSON", "UTF-8"}));
  EXPECT_TRUE(open_fails(std::string("{}\0\0\0\0\0\0", 8), "", {"header is not valid JSON: NUL byte at header offset 2"}));
  EXPECT_TRUE(open_fails(std::string("{\"a\0\": 1}", 9), "", {"NUL byte at header offset 3"}));
}

TEST_F(SafetensorsTest, HeaderIsNotAnObject) {
  EXPECT_TRUE(open_fails("[1, 2]", "", {"header must be a JSON object, got a JSON array"}));
  EXPECT_TRUE(open_fails("\"x\"", "", {"header must be a JSON object, got a JSON string"}));
}

TEST_F(SafetensorsTest, EntryIsNotAnObject) {
  EXPECT_TRUE(open_fails("{\"w\": 3}", "", {"tensor 'w': expected an object", "got a JSON number"}));
  EXPECT_TRUE(open_fails("{\"w\": [1]}", "", {"tensor 'w': expected an object", "got a JSON array"}));
}

TEST_F(SafetensorsTest, MissingFields) {
  EXPECT_TRUE(open_fails(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'),
                         {"tensor 'w': missing field 'dtype'"}));
  EXPECT_TRUE(open_fails(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", std::string(4, '\0'),
                         {"tensor 'w': missing field 'shape'"}));
  EXPECT_TRUE(open_fails(R"({"w":{"dtype":"F32","shape":[1]}})", std::string(4, '\0'),
                         {"tensor 'w': missing field 'data_offsets'"}));
}

TEST_F(SafetensorsTest, WronglyTypedFields) {
  const std::string four(4, '\0');
  EXPECT_TRUE(open_fails(R"({"w":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})", four,
                         {"tensor 'w': 'dtype' must be a string, got a JSON number"}));
  EXPECT_TRUE(open_fails(R"({"w":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})", four,
                         {"tensor 'w': 'shape' must be an array, got a JSON number"}));
  EXPECT_TRUE(open_fails(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":{"a":0}}})", four,
                         {"tensor 'w': 'data_offsets' must be two integers [begin, end], got a JSON object"}));
  EXPECT_TRUE(open_fails(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}})", four,
                         {"tensor 'w': 'data_offsets' must be two integers", "array of 1 elements"}));
  EXPECT_TRUE(open_fails(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", four,
                         {"tensor 'w': 'data_offsets' must be two integers"}));
  EXPECT_TRUE(open_fails(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})", four,
                         {"tensor 'w': data_offsets[1] must be a non-negative integer, got \"4\""}));
  EXPECT_TRUE(open_fails(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0.0,4]}})", four,
                         {"tensor 'w': data_offsets[0] must be a non-negative integer, got 0.0"}));
  EXPECT_TRUE(open_fails(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,4]}})", four,
                         {"tensor 'w': data_offsets[0] is negative (-4)"}));
}

TEST_F(SafetensorsTest, UnknownDtype) {
  EXPECT_TRUE(open_fails("{" + record("w", "F31", "[1]", "[0,4]") + "}", std::string(4, '\0'),
                         {"tensor 'w': unknown dtype 'F31' (not a safetensors dtype)"}));
  EXPECT_TRUE(open_fails("{" + record("w", "f32", "[1]", "[0,4]") + "}", std::string(4, '\0'),
                         {"unknown dtype 'f32'"}));
}

TEST_F(SafetensorsTest, BadShapeEntries) {
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[2,-1]", "[0,0]") + "}", "",
                         {"tensor 'w': shape[1] is negative (-1)"}));
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[1.5]", "[0,4]") + "}", std::string(4, '\0'),
                         {"tensor 'w': shape[0] must be a non-negative integer, got 1.5"}));
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[\"2\"]", "[0,8]") + "}", std::string(8, '\0'),
                         {"tensor 'w': shape[0] must be a non-negative integer, got \"2\""}));
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[[2]]", "[0,8]") + "}", std::string(8, '\0'),
                         {"tensor 'w': shape[0] must be a non-negative integer, got a JSON array"}));
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[9223372036854775808]", "[0,8]") + "}",
                         std::string(8, '\0'), {"tensor 'w': shape[0] = 9223372036854775808 is too large"}));
}

TEST_F(SafetensorsTest, ElementCountOverflow) {
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[4294967296,4294967296]", "[0,0]") + "}", "",
                         {"tensor 'w': shape [4294967296, 4294967296] of F32 is too large"}));
  // numel fits in int64, numel * 4 bytes does not.
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[4611686018427387904]", "[0,0]") + "}", "",
                         {"tensor 'w'", "too large"}));
}

TEST_F(SafetensorsTest, OffsetsOutOfOrderOrRange) {
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[1]", "[8,4]") + "}", std::string(8, '\0'),
                         {"tensor 'w': data_offsets [8, 4] have begin > end"}));
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[2]", "[0,8]") + "}", std::string(4, '\0'),
                         {"tensor 'w': data_offsets end 8 is past the end of the data buffer (4 bytes)"}));
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[0]", "[18446744073709551615,18446744073709551615]") + "}", "",
                         {"tensor 'w'", "past the end of the data buffer (0 bytes)"}));
}

TEST_F(SafetensorsTest, SizeDisagreesWithShape) {
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[2]", "[0,4]") + "}", std::string(8, '\0'),
                         {"tensor 'w': data_offsets [0, 4] hold 4 bytes, but dtype F32 and shape [2] need 8"}));
  EXPECT_TRUE(open_fails("{" + record("w", "BF16", "[2,2]", "[0,16]") + "}", std::string(16, '\0'),
                         {"hold 16 bytes, but dtype BF16 and shape [2, 2] need 8"}));
  // Sub-byte dtypes must fill whole bytes.
  EXPECT_TRUE(open_fails("{" + record("w", "F4", "[3]", "[0,2]") + "}", std::string(8, '\0'),
                         {"tensor 'w'", "does not fill whole bytes"}));
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  EXPECT_TRUE(open_fails("{" + record("a", "F32", "[2]", "[0,8]") + "," + record("b", "F32", "[2]", "[4,12]") + "}",
                         std::string(16, '\0'), {"tensors 'a' [0, 8) and 'b' [4, 12) overlap"}));
  // One range inside another.
  EXPECT_TRUE(open_fails("{" + record("a", "F32", "[4]", "[0,16]") + "," + record("b", "F32", "[1]", "[4,8]") + "}",
                         std::string(16, '\0'), {"'a' [0, 16) and 'b' [4, 8) overlap"}));
  // Empty tensors overlap nothing.
  const std::string ok = "{" + record("a", "F32", "[2]", "[0,8]") + "," + record("e", "F32", "[0]", "[4,4]") + "}";
  const std::string p = write_raw("ok.safetensors", st_image(ok, std::string(8, '\0')));
  EXPECT_NO_THROW(SafetensorsFile{p});
}

TEST_F(SafetensorsTest, DuplicateNames) {
  EXPECT_TRUE(open_fails("{" + record("a", "F32", "[1]", "[0,4]") + "," + record("a", "F32", "[1]", "[4,8]") + "}",
                         std::string(8, '\0'), {"duplicate key 'a' in the header"}));
}

TEST_F(SafetensorsTest, BadMetadata) {
  EXPECT_TRUE(open_fails(R"({"__metadata__": ["a"]})", "",
                         {"'__metadata__' must be an object of strings, got a JSON array"}));
  EXPECT_TRUE(open_fails(R"({"__metadata__": {"k": 1}})", "",
                         {"'__metadata__' value of 'k' must be a string, got a JSON number"}));
}

TEST_F(SafetensorsTest, DeeplyNestedJsonIsRejectedWithoutCrashing) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[1]", deep) + "}", "", {"tensor 'w': 'data_offsets'"}));
  EXPECT_TRUE(open_fails("{" + record("w", "F32", "[" + deep + "]", "[0,4]") + "}", "",
                         {"tensor 'w': shape[0]"}));
  EXPECT_TRUE(open_fails(deep, "", {"header must be a JSON object"}));
}

TEST_F(SafetensorsTest, ControlCharactersInNamesStayOnOneLine) {
  EXPECT_TRUE(open_fails(R"({"a\nb": 3})", "", {"tensor 'a?b'"}));
  const std::string p = write_raw("x.safetensors", st_image("{\"a\\nb\": 3}", ""));
  EXPECT_TRUE(throws_error_with([&] { SafetensorsFile f(p); }, {"a?b"}));
}

TEST_F(SafetensorsTest, EmptyHeaderAndZeroSizeTensorsAreFine) {
  const std::string p1 = write_raw("e.safetensors", st_image("{}", ""));
  EXPECT_TRUE(SafetensorsFile(p1).names().empty());
  const std::string p2 = write_raw("z.safetensors", st_image("{" + record("z", "F16", "[0,5]", "[0,0]") + "}", ""));
  const SafetensorsFile f(p2);
  const TensorView v = f.tensor("z");
  EXPECT_TRUE(v.present());
  EXPECT_EQ(v.size(1), 5);
}

// --- refused by tensor() --------------------------------------------------------------------------

TEST_F(SafetensorsTest, UnsupportedDtypesOpenButCannotBeViewed) {
  const std::string header = "{" + record("d", "F64", "[1]", "[0,8]") + "," + record("i", "I64", "[1]", "[8,16]") +
                             "," + record("q", "F8_E4M3", "[2]", "[16,18]") + "," + record("p", "F4", "[4]", "[18,20]") +
                             "," + record("f", "F32", "[1]", "[20,24]") + "}";
  const std::string p = write_raw("dt.safetensors", st_image(header, std::string(24, '\0')));
  const SafetensorsFile f(p);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"d", "i", "q", "p", "f"}));
  EXPECT_TRUE(throws_error_with([&] { f.tensor("d"); },
                                {p + ": tensor 'd': dtype F64 is not supported; expected F32, F16, BF16 or BOOL"}));
  EXPECT_TRUE(throws_error_with([&] { f.tensor("i"); }, {p, "tensor 'i'", "dtype I64 is not supported"}));
  EXPECT_TRUE(throws_error_with([&] { f.tensor("q"); }, {p, "dtype F8_E4M3 is not supported"}));
  EXPECT_TRUE(throws_error_with([&] { f.tensor("p"); }, {p, "dtype F4 is not supported"}));
  EXPECT_EQ(f.tensor("f").dtype, DType::kF32);
}

TEST_F(SafetensorsTest, RankAboveMax) {
  const std::string p = write_raw("r5.safetensors",
                                  st_image("{" + record("r", "F32", "[1,1,1,1,2]", "[0,8]") + "}", std::string(8, '\0')));
  const SafetensorsFile f(p);
  EXPECT_TRUE(f.contains("r"));
  EXPECT_TRUE(throws_error_with([&] { f.tensor("r"); },
                                {p, "tensor 'r': rank 5 (shape [1, 1, 1, 1, 2]) exceeds the maximum rank 4"}));
}

TEST_F(SafetensorsTest, MisalignedData) {
  const std::string header = "{" + record("b", "BOOL", "[1]", "[0,1]") + "," + record("f", "F32", "[1]", "[1,5]") +
                             "," + record("h", "F16", "[1]", "[5,7]") + "}";
  const std::string p = write_raw("mis.safetensors", st_image(header, std::string(7, '\0')));
  const SafetensorsFile f(p);
  EXPECT_NO_THROW(f.tensor("b"));
  EXPECT_TRUE(throws_error_with([&] { f.tensor("f"); }, {p, "tensor 'f'", "not aligned to its 4-byte elements"}));
  EXPECT_TRUE(throws_error_with([&] { f.tensor("h"); }, {p, "tensor 'h'", "not aligned to its 2-byte elements"}));
}

TEST_F(SafetensorsTest, AbsentTensor) {
  write_safetensors(path("a.safetensors"), {});
  const SafetensorsFile f(path("a.safetensors"));
  EXPECT_TRUE(throws_error_with([&] { f.tensor("missing"); }, {path("a.safetensors"), "no tensor named 'missing'"}));
}

TEST_F(SafetensorsTest, BinaryJunkNeverCrashes) {
  // Every prefix of a valid file, and every single-byte corruption, gives a clean Error or a file
  // whose views all lie inside it.
  const std::vector<float> data = iota_f32(6);
  const uint16_t h[2] = {1, 2};
  const NamedTensor tensors[] = {{"a", view(data.data(), {2, 3})},
                                 {"h", view(h, DType::kF16, Layout::contiguous({2}))}};
  write_safetensors(path("good.safetensors"), tensors, {{"k", "v"}});
  const std::string good = slurp(path("good.safetensors"));
  for (size_t n = 0; n < good.size(); ++n) {
    const std::string p = write_raw("prefix.safetensors", good.substr(0, n));
    EXPECT_THROW(SafetensorsFile{p}, Error) << "prefix of " << n << " bytes";
  }
  for (size_t i = 0; i < good.size(); ++i) {
    for (char c : {'\xff', '\0', '9', '['}) {
      std::string bad = good;
      bad[i] = c;
      const std::string p = write_raw("flip.safetensors", bad);
      try {
        const SafetensorsFile f(p);
        for (const std::string& name : f.names()) {
          try {
            const TensorView v = f.tensor(name);
            (void)view_bytes(v);  // reads every byte: must stay inside the mapping
          } catch (const Error&) {
          }
        }
      } catch (const Error&) {
      }
    }
  }
}

// --- write failures -------------------------------------------------------------------------------

TEST_F(SafetensorsTest, WriteIntoMissingDirectoryFails) {
  const std::string p = path("no/such/dir/out.safetensors");
  const float x = 1.0f;
  const NamedTensor tensors[] = {{"x", view(&x, {1})}};
  EXPECT_TRUE(throws_error_with([&] { write_safetensors(p, tensors); }, {p, "cannot write"}));
  EXPECT_FALSE(fs::exists(p));
}

TEST_F(SafetensorsTest, FailedWriteLeavesExistingTargetUntouched) {
  // The target is a non-empty directory: the temporary file is written, the rename fails.
  const std::string target = path("target.safetensors");
  fs::create_directory(target);
  write_raw("target.safetensors/keep", "precious");
  const float x[2] = {1.0f, 2.0f};
  const NamedTensor tensors[] = {{"x", view(x, {2})}};
  EXPECT_TRUE(throws_error_with([&] { write_safetensors(target, tensors); }, {target, "cannot write"}));
  EXPECT_EQ(slurp(path("target.safetensors/keep")), "precious");
  EXPECT_EQ(listing(), std::vector<std::string>{"target.safetensors"}) << "temporary file left behind";
}

TEST_F(SafetensorsTest, RejectedWritesLeaveExistingFileUntouched) {
  const std::string old = "old contents \x01\x02\xff";
  const std::string target = write_raw("old.safetensors", old);
  const float x[2] = {1.0f, 2.0f};
  const auto rejected = [&](std::vector<NamedTensor> tensors, std::vector<std::string> parts,
                            const std::map<std::string, std::string>& meta = {}) {
    parts.push_back(target + ": ");
    return throws_error_with([&] { write_safetensors(target, tensors, meta); }, parts);
  };
  EXPECT_TRUE(rejected({{"x", view(x, {2})}, {"y", view(x, {1})}, {"x", view(x, {1})}},
                       {"cannot write: tensor name 'x' appears twice"}));
  EXPECT_TRUE(rejected({{"__metadata__", view(x, {2})}}, {"tensor name '__metadata__' is reserved"}));
  EXPECT_TRUE(rejected({{"x", view(x, {2})}, {"gone", TensorView{}}}, {"tensor 'gone' is absent"}));
  EXPECT_TRUE(rejected({{"neg", view(x, DType::kF32, Layout::strided({2, -1}, {1, 1}))}},
                       {"tensor 'neg'", "shape [2, -1] has a negative dimension"}));
  EXPECT_TRUE(rejected({{"huge", view(x, DType::kF32, Layout::strided({1LL << 40, 1LL << 40}, {0, 0}))}},
                       {"tensor 'huge'", "too large"}));
  EXPECT_TRUE(rejected({{std::string("bad\xff"), view(x, {2})}}, {"not valid UTF-8"}));
  EXPECT_TRUE(rejected({{"x", view(x, {2})}}, {"not valid UTF-8"}, {{"k", std::string("\xc3")}}));
  EXPECT_EQ(slurp(target), old);
  EXPECT_EQ(listing(), std::vector<std::string>{"old.safetensors"});
}

TEST_F(SafetensorsTest, WriteReplacesExistingFile) {
  const std::string target = write_raw("old.safetensors", "old contents");
  const float x[2] = {4.0f, 5.0f};
  const NamedTensor tensors[] = {{"x", view(x, {2})}};
  write_safetensors(target, tensors);
  const SafetensorsFile f(target);
  EXPECT_EQ(f.names(), std::vector<std::string>{"x"});
  EXPECT_EQ(listing(), std::vector<std::string>{"old.safetensors"});
}

}  // namespace
}  // namespace xattn
