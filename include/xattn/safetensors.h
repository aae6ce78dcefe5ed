#pragma once
// safetensors files (https://github.com/huggingface/safetensors): read by memory-mapping the file
// and handing out views into the mapping, written atomically from views of any strides.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "xattn/tensor.h"

namespace xattn {

// A .safetensors file mapped read-only. The constructor validates the whole header, so a file
// that opens is one whose every tensor lies inside the data buffer with a size that matches its
// dtype and shape; tensor() can then only refuse what a TensorView cannot hold (dtypes other than
// F32/F16/BF16/BOOL, rank above kMaxRank, misaligned data).
//
// Views returned by tensor() point into the mapping: they are valid while this object lives
// (moving it keeps them valid; destroying it unmaps the file). Another process truncating the
// file while it is mapped makes reads through the views fault, as with any mmap.
class SafetensorsFile {
 public:
  // Throws xattn::Error naming `path` and what is wrong for a missing or unreadable file, a
  // malformed header, or tensors whose offsets are out of range, inconsistent or overlapping.
  explicit SafetensorsFile(const std::string& path);
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // Tensor names in order of their data offsets (ties broken by name).
  std::vector<std::string> names() const;
  bool contains(std::string_view name) const;
  // A zero-copy, contiguous row-major view of the tensor's data. Throws xattn::Error naming the
  // tensor and the file when there is no such tensor, its dtype has no xattn DType, its rank
  // exceeds kMaxRank, or its address in the mapping is not a multiple of its element size.
  TensorView tensor(std::string_view name) const;
  // The optional "__metadata__" string map; empty when the file has none.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Entry {
    std::string name;
    std::string dtype;  // the file's dtype string, e.g. "F32" or "I64"
    int bits = 0;       // bits per element of `dtype`
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // byte range in the data buffer
    uint64_t end = 0;
  };

  const Entry& entry(std::string_view name) const;
  void unmap() noexcept;

  std::string path_;
  const std::byte* map_ = nullptr;
  size_t map_size_ = 0;
  uint64_t data_start_ = 0;  // file offset of the data buffer: 8 + header length
  std::vector<Entry> entries_;  // sorted as names() returns them
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in entries_
  std::map<std::string, std::string> metadata_;
};

struct NamedTensor {
  std::string name;
  TensorView tensor;
};

// Writes `tensors` (f32, f16, bf16, bool; any strides, including negative and zero) as a
// .safetensors file, the data of each stored contiguous row-major. Tensors are laid out by
// descending element size, stably (so in the given order within each size), and the header is
// padded with spaces to a multiple of 8: then every tensor's data starts at a multiple of its
// element size, which keeps zero-copy readers (ours included) aligned. The header lists them in
// that order, with "__metadata__" first when `metadata` is not empty.
//
// The file goes to a temporary beside `path` that is renamed into place, so `path` is either
// untouched or complete. Throws xattn::Error naming `path` when the write fails, a name repeats
// or is "__metadata__", a name or metadata string is not valid UTF-8, or a tensor is absent or
// has a negative or overflowing shape.
void write_safetensors(const std::string& path, std::span<const NamedTensor> tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace xattn
