#pragma once
// Test support: random attention problems, strided buffers of any dtype, and comparison of
// xattn's results with the float64 reference.

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "reference/reference.h"
#include "xattn/xattn.h"

namespace xattn::testing {

// How a logical [d0, d1, d2, d3] tensor is laid out in memory.
enum class Layout4 { kContiguous, kSwapHeadsAndRows, kPadded, kReversedRows };

// Owns memory for a strided 4-D (or lower-rank) tensor of some dtype.
class StridedBuffer {
 public:
  StridedBuffer(std::vector<int64_t> shape, DType dtype, Layout4 layout);
  // Logical row-major values in, converted to the dtype.
  void fill(const std::vector<double>& values);
  // Logical row-major values out, converted from the dtype.
  std::vector<double> read() const;
  TensorView view() const { return {base(), dtype_, layout_}; }
  MutableTensorView mutable_view() { return {base(), dtype_, layout_}; }
  // Sets every byte of storage, including gaps, to a pattern (to see untouched outputs).
  void poison(uint8_t byte);
  const std::vector<uint8_t>& storage() const { return storage_; }

 private:
  void* base() const { return const_cast<uint8_t*>(storage_.data()) + base_offset_ * dtype_size(dtype_); }
  int64_t offset_of(int64_t flat) const;

  std::vector<int64_t> shape_;
  DType dtype_;
  xattn::Layout layout_;
  int64_t base_offset_ = 0;
  std::vector<uint8_t> storage_;
};

// Value as stored in dtype t and read back (what the kernel actually sees).
double round_to(DType t, double x);

struct RandomCase {
  reference::Problem ref;        // values already rounded to the input dtype
  DType dtype = DType::kF32;
  DType out_dtype = DType::kF32;
  Layout4 layout = Layout4::kContiguous;
  enum class MaskKind { kNone, kBool, kFloat } mask_kind = MaskKind::kNone;
  std::vector<int64_t> mask_shape;  // broadcastable to [B,Hq,Lq,Lk], rank 1..4
  std::vector<double> mask_values;  // row-major over mask_shape (bool: 0 or 1)
  bool default_scale = true;
  bool want_lse = true, want_weights = false;
  bool bf16_probabilities = false;  // AttentionParams::bf16_probabilities
  int threads = 1;
  std::string describe() const;
};

RandomCase random_case(std::mt19937_64& rng);

struct Outputs {
  std::vector<double> out, lse, weights;
};

// Sums a dense [B, Hq, Lq, Lk] array over the dims the case's mask broadcasts, giving an array
// of the mask's shape (row-major).
std::vector<double> reduce_to_mask_shape(const RandomCase& c, const std::vector<double>& dense);

// Runs xattn::attention on the case (with its layout, dtype and options).
Outputs run_xattn(const RandomCase& c);

// Runs xattn's forward (f32 out and lse) and then attention_backward with the given dout, on
// backward_threads threads (0: the case's); gradients in the case's output dtype and layout,
// and for a float mask its gradient (f32, the mask's shape).
reference::Gradients run_xattn_backward(const RandomCase& c, const std::vector<double>& dout,
                                        int backward_threads = 0);

// Max error of `got` against `want`, scaled per the case's documented tolerance; <= 1 passes.
struct Check {
  double worst_ratio = 0;
  std::string where;
};
Check compare(const RandomCase& c, const Outputs& got, const reference::Result& want);

}  // namespace xattn::testing
