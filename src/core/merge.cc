// merge(): two (out, lse) results over disjoint key sets -> the result over their union.

#include <algorithm>
#include <initializer_list>
#include <sstream>
#include <utility>
#include <vector>

#include "core/convert.h"
#include "core/out_of_memory.h"
#include "core/parallel.h"
#include "core/softmax_state.h"
#include "core/validate.h"
#include "xattn/attention.h"
#include "xattn/error.h"

namespace xattn {
namespace {

constexpr const char* kOutDims[] = {"d0", "d1", "d2", "d3"};

int64_t offset(const TensorView& t, const int64_t* idx, int rank) {
  int64_t o = 0;
  for (int d = 0; d < rank; ++d) o += idx[d] * t.stride(d);
  return o;
}

void check_same_shape(const char* arg, const TensorView& t, const TensorView& ref,
                      const char* ref_name) {
  bool same = t.rank() == ref.rank();
  for (int d = 0; same && d < t.rank(); ++d) same = t.size(d) == ref.size(d);
  if (!same) {
    std::ostringstream os;
    os << arg << ": shape must equal " << ref_name << "'s shape [";
    for (int d = 0; d < ref.rank(); ++d) os << (d ? ", " : "") << ref.size(d);
    os << "], got [";
    for (int d = 0; d < t.rank(); ++d) os << (d ? ", " : "") << t.size(d);
    os << "]";
    throw Error(os.str());
  }
}

void check_lse(const char* arg, const TensorView& lse, const TensorView& out_a) {
  if (lse.rank() != out_a.rank() - 1)  // (first: kOutDims names at most 4 dims)
    throw Error(std::string(arg) + ": expected rank " + std::to_string(out_a.rank() - 1) +
                " (out_a's shape without its last dim), got rank " + std::to_string(lse.rank()));
  core::check_view(arg, lse, std::span(kOutDims, lse.rank()));
  if (lse.dtype != DType::kF32)
    throw Error(std::string(arg) + ": dtype must be float32, got " + std::string(dtype_name(lse.dtype)));
  bool ok = lse.rank() == out_a.rank() - 1;
  for (int d = 0; ok && d < lse.rank(); ++d) ok = lse.size(d) == out_a.size(d);
  if (!ok) throw Error(std::string(arg) + ": shape must be out_a's shape without its last dim");
}

// An output may be one of the inputs exactly (each element is read before it is written, by
// the same step), but must not otherwise share memory with the inputs or the other output.
void check_output_memory(const char* arg, const TensorView& t,
                         std::initializer_list<std::pair<const char*, TensorView>> others) {
  for (const auto& [name, o] : others) {
    const bool same =
        t.data == o.data && t.dtype == o.dtype && t.layout.strides == o.layout.strides;
    if (!same && core::share_memory(t, o))
      throw Error(std::string(arg) + ": overlaps " + name + " in memory without being it; an "
                  "output may alias an input exactly, or not at all");
  }
}

void merge_checked(const TensorView& out_a, const TensorView& lse_a, const TensorView& out_b,
                   const TensorView& lse_b, const MutableTensorView& out,
                   const MutableTensorView& lse) {
  if (out_a.rank() < 1 || out_a.rank() > kMaxRank)
    throw Error("out_a: expected rank 1 to 4 [..., L, Dv], got rank " + std::to_string(out_a.rank()));
  const std::span dims(kOutDims, out_a.rank());
  core::check_view("out_a", out_a, dims);
  core::check_view("out_b", out_b, dims);
  core::check_view("out", out, dims);
  for (auto [name, t] : {std::pair{"out_a", out_a}, {"out_b", out_b}, {"out", TensorView(out)}})
    if (t.dtype == DType::kBool)
      throw Error(std::string(name) + ": dtype must be float32, float16 or bfloat16, got bool");
  check_same_shape("out_b", out_b, out_a, "out_a");
  check_same_shape("out", out, out_a, "out_a");
  check_lse("lse_a", lse_a, out_a);
  check_lse("lse_b", lse_b, out_a);
  check_lse("lse", lse, out_a);
  core::check_output("out", out);
  core::check_output("lse", lse);
  check_output_memory("out", out, {{"out_a", out_a}, {"out_b", out_b}, {"lse_a", lse_a},
                                   {"lse_b", lse_b}});
  check_output_memory("lse", lse, {{"out_a", out_a}, {"out_b", out_b}, {"lse_a", lse_a},
                                   {"lse_b", lse_b}});
  if (core::share_memory(out, lse)) throw Error("lse: overlaps out in memory");
  for (int d = 0; d < out_a.rank() - 1; ++d)
    if (out_a.size(d) == 0) return;  // no rows: nothing to merge

  const int rows_rank = out_a.rank() - 1;
  const int64_t dv = out_a.size(out_a.rank() - 1);
  int64_t rows = 1;
  for (int d = 0; d < rows_rank; ++d) rows *= out_a.size(d);
  auto read = [&](const TensorView& t, int64_t base, float* dst) {
    const int64_t s = t.stride(t.rank() - 1);
    if (t.dtype == DType::kF32 && s == 1)
      std::copy_n(static_cast<const float*>(t.data) + base, dv, dst);
    else
      for (int64_t e = 0; e < dv; ++e) dst[e] = core::load_element(t.data, t.dtype, base + e * s);
  };
  // Rows are independent, so any split over threads gives the same bits. A block of rows per
  // item amortises the scratch; merge is memory-bound, so it wants every core's bandwidth.
  constexpr int64_t kRowsPerItem = 64;
  const int64_t items = (rows + kRowsPerItem - 1) / kRowsPerItem;
  core::parallel_for(items, core::resolve_threads(0), [&](int64_t item) {
    std::vector<float> a(dv), b(dv), result(dv);
    const int64_t end = std::min(rows, (item + 1) * kRowsPerItem);
    for (int64_t row = item * kRowsPerItem; row < end; ++row) {
      int64_t idx[kMaxRank] = {0, 0, 0, 0};
      for (int64_t d = rows_rank - 1, r = row; d >= 0; --d) {
        idx[d] = r % out_a.size(d);
        r /= out_a.size(d);
      }
      read(out_a, offset(out_a, idx, rows_rank), a.data());
      read(out_b, offset(out_b, idx, rows_rank), b.data());
      const float la = static_cast<const float*>(lse_a.data)[offset(lse_a, idx, rows_rank)];
      const float lb = static_cast<const float*>(lse_b.data)[offset(lse_b, idx, rows_rank)];
      core::SoftmaxState s{la, 1.0f};
      if (la == core::kNegInf) s.l = 0.0f;
      core::merge_into(s, a.data(), {lb, lb == core::kNegInf ? 0.0f : 1.0f}, b.data(), dv);
      const float l = core::finalize_row(s, a.data(), result.data(), dv);
      core::store_row(result.data(), dv,
                      core::element_ptr(out.data, out.dtype, offset(out, idx, rows_rank)),
                      out.dtype, out.layout.strides[out.layout.rank - 1]);
      static_cast<float*>(lse.data)[offset(lse, idx, rows_rank)] = l;
    }
  });
}

}  // namespace

void merge(const TensorView& out_a, const TensorView& lse_a, const TensorView& out_b,
           const TensorView& lse_b, const MutableTensorView& out, const MutableTensorView& lse) {
  core::translate_allocation_failure("merge",
                                     [&] { merge_checked(out_a, lse_a, out_b, lse_b, out, lse); });
}

}  // namespace xattn
