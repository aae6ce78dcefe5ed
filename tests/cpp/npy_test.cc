// .npy reading and writing: round trips, Fortran order, and one test per kind of damaged file.

#include "xattn/npy.h"

#include <gtest/gtest.h>
#include <unistd.h>

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
                                             std::initializer_list<std::string> parts) {
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

// A .npy file image with the given header dict (padded like numpy pads it) and raw data bytes.
std::string npy_image(const std::string& dict, const std::string& data, int major = 1) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  const size_t len = header.size();
  out += static_cast<char>(len & 0xff);
  out += static_cast<char>((len >> 8) & 0xff);
  if (major != 1) {
    out += static_cast<char>((len >> 16) & 0xff);
    out += static_cast<char>((len >> 24) & 0xff);
  }
  return out + header + data;
}

std::string f32_bytes(const std::vector<float>& v) {
  std::string s(v.size() * sizeof(float), '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

using NpyTest = xattn::test_files::TempDirTest;

TEST_F(NpyTest, RoundTripF32) {
  std::vector<float> data(2 * 3 * 4);
  for (size_t i = 0; i < data.size(); ++i) data[i] = 0.5f * static_cast<float>(i) - 3.0f;
  const std::vector<int64_t> shape = {2, 3, 4};
  write_npy(path("a.npy"), DType::kF32, shape, data.data());

  const NpyArray a = read_npy(path("a.npy"));
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, shape);
  EXPECT_FALSE(a.fortran_order);
  EXPECT_EQ(a.numel(), 24);
  ASSERT_EQ(a.bytes.size(), data.size() * 4);
  EXPECT_EQ(std::memcmp(a.bytes.data(), data.data(), a.bytes.size()), 0);

  const TensorView v = a.view();
  EXPECT_EQ(v.rank(), 3);
  EXPECT_EQ(v.size(0), 2);
  EXPECT_EQ(v.size(2), 4);
  EXPECT_EQ(v.stride(0), 12);
  EXPECT_EQ(v.stride(1), 4);
  EXPECT_EQ(v.stride(2), 1);
}

TEST_F(NpyTest, WrittenHeaderIsV1AndDataIs64ByteAligned) {
  const float x[3] = {1, 2, 3};
  const int64_t shape[1] = {3};
  write_npy(path("a.npy"), DType::kF32, shape, x);
  const std::string bytes = slurp(path("a.npy"));
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  EXPECT_EQ(bytes.size(), 10 + header_len + sizeof(x));
  EXPECT_EQ(bytes[10 + header_len - 1], '\n');
  EXPECT_NE(bytes.find("'shape': (3,)"), std::string::npos);
}

TEST_F(NpyTest, RoundTripF16) {
  std::vector<uint16_t> data;
  for (float f : {0.0f, -1.5f, 65504.0f, 1e-7f, 3.140625f, -0.0f}) data.push_back(float_to_f16(f));
  const std::vector<int64_t> shape = {1, 2, 3};
  write_npy(path("h.npy"), DType::kF16, shape, data.data());
  const NpyArray a = read_npy(path("h.npy"));
  EXPECT_EQ(a.dtype, DType::kF16);
  EXPECT_EQ(a.shape, shape);
  ASSERT_EQ(a.bytes.size(), data.size() * 2);
  EXPECT_EQ(std::memcmp(a.bytes.data(), data.data(), a.bytes.size()), 0);
  EXPECT_EQ(a.view().dtype, DType::kF16);
}

TEST_F(NpyTest, RoundTripBool) {
  const bool data[6] = {true, false, false, true, true, false};
  const std::vector<int64_t> shape = {2, 3};
  write_npy(path("m.npy"), DType::kBool, shape, data);
  const NpyArray a = read_npy(path("m.npy"));
  EXPECT_EQ(a.dtype, DType::kBool);
  EXPECT_EQ(a.shape, shape);
  ASSERT_EQ(a.bytes.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(static_cast<bool>(a.bytes[i]), data[i]) << i;
  EXPECT_NE(slurp(path("m.npy")).find("'|b1'"), std::string::npos);
}

TEST_F(NpyTest, ScalarAndEmptyArrays) {
  const float one = 1.0f;
  write_npy(path("s.npy"), DType::kF32, {}, &one);
  const NpyArray s = read_npy(path("s.npy"));
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.view().rank(), 0);

  const std::vector<int64_t> shape = {0, 3};
  write_npy(path("e.npy"), DType::kF32, shape, nullptr);
  const NpyArray e = read_npy(path("e.npy"));
  EXPECT_EQ(e.shape, shape);
  EXPECT_EQ(e.numel(), 0);
  // An empty array is still a present argument.
  EXPECT_TRUE(e.view().present());
}

TEST_F(NpyTest, EmptyArrayWithHugeOtherDims) {
  // A zero dim makes the byte count 0 however large the other dims are, so the file is valid;
  // view()'s strides must not overflow (found by fuzz/npy_fuzz under UBSan).
  for (const char* order : {"False", "True"}) {
    const std::string p = write_raw(
        "huge_empty.npy", npy_image(std::string("{'descr': '<f4', 'fortran_order': ") + order +
                                        ", 'shape': (2, 0, 99999999999, 99999999999), }",
                                    ""));
    const NpyArray a = read_npy(p);
    EXPECT_EQ(a.numel(), 0);
    const TensorView v = a.view();
    EXPECT_TRUE(v.present());
    ASSERT_EQ(v.rank(), 4);
    EXPECT_EQ(v.size(3), 99999999999);
  }
}

TEST_F(NpyTest, FortranOrderGivesReversedStridesWithoutCopy) {
  // a[i, j] = 10 i + j for shape (2, 3), stored column by column.
  const std::vector<float> column_major = {0, 10, 1, 11, 2, 12};
  const std::string p = write_raw(
      "f.npy", npy_image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                         f32_bytes(column_major)));
  const NpyArray a = read_npy(p);
  EXPECT_TRUE(a.fortran_order);
  const TensorView v = a.view();
  ASSERT_EQ(v.rank(), 2);
  EXPECT_EQ(v.size(0), 2);
  EXPECT_EQ(v.size(1), 3);
  EXPECT_EQ(v.stride(0), 1);
  EXPECT_EQ(v.stride(1), 2);
  EXPECT_EQ(v.data, a.bytes.data());
  const auto* f = static_cast<const float*>(v.data);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(f[i * v.stride(0) + j * v.stride(1)], 10 * i + j);
}

TEST_F(NpyTest, FortranOrderRank3) {
  // shape (2, 3, 4): element (i, j, k) at i + 2 j + 6 k.
  std::vector<float> data(24);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) data[i + 2 * j + 6 * k] = static_cast<float>(100 * i + 10 * j + k);
  const std::string p = write_raw(
      "f3.npy", npy_image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }", f32_bytes(data)));
  const TensorView v = read_npy(p).view();
  EXPECT_EQ(v.stride(0), 1);
  EXPECT_EQ(v.stride(1), 2);
  EXPECT_EQ(v.stride(2), 6);
}

TEST_F(NpyTest, ReadsVersion2And3Headers) {
  for (int major : {2, 3}) {
    const std::string p = write_raw(
        "v" + std::to_string(major) + ".npy",
        npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", f32_bytes({1, 2}), major));
    const NpyArray a = read_npy(p);
    EXPECT_EQ(a.shape, std::vector<int64_t>{2}) << major;
  }
}

TEST_F(NpyTest, MissingFile) {
  const std::string p = path("nope.npy");
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "cannot open"}));
}

TEST_F(NpyTest, DirectoryIsNotAFile) {
  EXPECT_TRUE(throws_error_with([&] { read_npy(dir_.string()); }, {dir_.string(), "directory"}));
}

TEST_F(NpyTest, EmptyFile) {
  const std::string p = write_raw("empty.npy", "");
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "empty file"}));
}

TEST_F(NpyTest, BadMagic) {
  const std::string p = write_raw("text.npy", "hello, this is not numpy data at all");
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "bad magic"}));
}

TEST_F(NpyTest, TruncatedPrefix) {
  const std::string p = write_raw("short.npy", std::string("\x93NUMPY\x01", 7));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "truncated"}));
}

TEST_F(NpyTest, UnsupportedVersion) {
  std::string img = npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", f32_bytes({1}));
  img[6] = 9;
  const std::string p = write_raw("v9.npy", img);
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "unsupported .npy version 9.0"}));
}

TEST_F(NpyTest, HeaderLengthBeyondFile) {
  std::string img = npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "");
  img[9] = 0x20;  // header length += 8192, past the end of the file
  const std::string p = write_raw("hlen.npy", img);
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "truncated"}));
}

TEST_F(NpyTest, ImplausibleHeaderLength) {
  std::string img = npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "", 2);
  img[11] = 0x7f;  // a 2 GB header
  const std::string p = write_raw("huge_header.npy", img);
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "header length", "implausibly large"}));
}

TEST_F(NpyTest, MalformedHeaderDict) {
  const std::string p = write_raw("dict.npy", npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", f32_bytes({1})));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "malformed .npy header"}));
}

TEST_F(NpyTest, HeaderMissingKey) {
  const std::string p = write_raw("nokey.npy", npy_image("{'descr': '<f4', 'shape': (1,), }", f32_bytes({1})));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "missing key 'fortran_order'"}));
}

TEST_F(NpyTest, HeaderUnknownAndDuplicateKeys) {
  const std::string p1 = write_raw(
      "extra.npy", npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", f32_bytes({1})));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p1); }, {p1, "unexpected key 'x'"}));
  const std::string p2 = write_raw(
      "dup.npy", npy_image("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", f32_bytes({1})));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p2); }, {p2, "duplicate key 'descr'"}));
}

TEST_F(NpyTest, MalformedShape) {
  const std::string p1 = write_raw(
      "neg.npy", npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", ""));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p1); }, {p1, "negative dimension"}));
  const std::string p2 = write_raw(
      "notuple.npy", npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': 3, }", f32_bytes({1, 2, 3})));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p2); }, {p2, "malformed .npy header", "expected '('"}));
  const std::string p3 = write_raw(
      "bigdim.npy", npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", ""));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p3); }, {p3, "dimension too large"}));
}

TEST_F(NpyTest, OverflowingShapeProduct) {
  // Each dim fits in int64 but their product (times 4 bytes) does not; must not allocate.
  const std::string p = write_raw(
      "overflow.npy",
      npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", ""));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "too large"}));
}

TEST_F(NpyTest, UnsupportedDtype) {
  const std::string p = write_raw(
      "f8.npy", npy_image("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')));
  EXPECT_TRUE(throws_error_with(
      [&] { read_npy(p); },
      {p + ": unsupported dtype '<f8' (expected float32 '<f4', float16 '<f2' or bool '|b1')"}));
}

TEST_F(NpyTest, StructuredDtype) {
  const std::string p = write_raw(
      "rec.npy",
      npy_image("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", std::string(4, '\0')));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "unsupported dtype"}));
}

TEST_F(NpyTest, BigEndian) {
  const std::string p = write_raw(
      "be.npy", npy_image("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", std::string(4, '\0')));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "big-endian", "'>f4'"}));
}

TEST_F(NpyTest, RankAboveMax) {
  const std::string p = write_raw(
      "r5.npy", npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 2), }", f32_bytes({1, 2})));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "rank 5", "maximum rank 4"}));
}

TEST_F(NpyTest, TruncatedData) {
  const std::string p = write_raw(
      "trunc.npy",
      npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (32, 32), }", std::string(100, '\0')));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); },
                                {p, "truncated: header says 4096 bytes of data, file has 100"}));
}

TEST_F(NpyTest, TrailingGarbage) {
  const std::string p = write_raw(
      "trail.npy",
      npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", f32_bytes({1, 2}) + "junk"));
  EXPECT_TRUE(throws_error_with([&] { read_npy(p); }, {p, "trailing garbage", "8 bytes", "has 12"}));
}

TEST_F(NpyTest, BinaryJunkNeverCrashes) {
  // Every prefix of a valid file, and a few corruptions, must give a clean Error.
  const std::string good =
      npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", f32_bytes({1, 2, 3, 4}));
  for (size_t n = 0; n < good.size(); ++n) {
    const std::string p = write_raw("prefix.npy", good.substr(0, n));
    EXPECT_THROW(read_npy(p), Error) << "prefix of " << n << " bytes";
  }
  for (size_t i = 8; i < 80; ++i) {
    std::string bad = good;
    bad[i] = '\xff';
    const std::string p = write_raw("flip.npy", bad);
    try {
      read_npy(p);  // a few bytes (padding) may be harmless
    } catch (const Error&) {
    }
  }
}

TEST_F(NpyTest, WriteIntoMissingDirectoryFails) {
  const std::string p = path("no/such/dir/out.npy");
  const float x = 1.0f;
  const int64_t shape[1] = {1};
  EXPECT_TRUE(throws_error_with([&] { write_npy(p, DType::kF32, shape, &x); }, {p, "cannot write"}));
  EXPECT_FALSE(fs::exists(p));
}

TEST_F(NpyTest, FailedWriteLeavesExistingTargetUntouched) {
  // The target is a non-empty directory: the temporary file is written, the rename fails.
  const std::string target = path("target.npy");
  fs::create_directory(target);
  write_raw("target.npy/keep", "precious");
  const float x[2] = {1.0f, 2.0f};
  const int64_t shape[1] = {2};
  EXPECT_TRUE(throws_error_with([&] { write_npy(target, DType::kF32, shape, x); }, {target, "cannot write"}));
  EXPECT_EQ(slurp(path("target.npy/keep")), "precious");
  EXPECT_EQ(listing(), std::vector<std::string>{"target.npy"}) << "temporary file left behind";
}

TEST_F(NpyTest, RejectedWriteLeavesExistingFileUntouched) {
  const std::string target = write_raw("old.npy", "old contents");
  const uint16_t x[1] = {0};
  const int64_t shape[1] = {1};
  EXPECT_TRUE(throws_error_with([&] { write_npy(target, DType::kBF16, shape, x); }, {target, "bfloat16"}));
  const int64_t negative[1] = {-3};
  EXPECT_TRUE(throws_error_with([&] { write_npy(target, DType::kF32, negative, x); }, {target, "shape"}));
  EXPECT_EQ(slurp(target), "old contents");
  EXPECT_EQ(listing(), std::vector<std::string>{"old.npy"});
}

TEST_F(NpyTest, WriteReplacesExistingFile) {
  const std::string target = write_raw("old.npy", "old contents");
  const float x[2] = {4.0f, 5.0f};
  const int64_t shape[1] = {2};
  write_npy(target, DType::kF32, shape, x);
  const NpyArray a = read_npy(target);
  EXPECT_EQ(a.shape, std::vector<int64_t>{2});
  EXPECT_EQ(listing(), std::vector<std::string>{"old.npy"});
}

}  // namespace
}  // namespace xattn
