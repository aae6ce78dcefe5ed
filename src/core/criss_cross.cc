// criss_cross_attention: the row problem and the column problem of one map, each one call of the
// kernel on strided views of the same arrays, merged by log-sum-exp as the second stores its
// rows. Only the column problem carries a mask, [H, H] with a false diagonal, so that the
// centre pixel counts once.

#include "xattn/criss_cross.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/convert.h"
#include "core/out_of_memory.h"
#include "core/parallel.h"
#include "core/validate.h"
#include "xattn/error.h"

namespace xattn {
namespace {

constexpr const char* kQK[] = {"B", "H", "W", "D"};
constexpr const char* kV[] = {"B", "H", "W", "Dv"};
constexpr const char* kLse[] = {"B", "H", "W"};

std::string shape_text(const TensorView& t, int dims) {
  std::string s = "[";
  for (int d = 0; d < dims; ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

// t must be rank 4 (3 for lse) with its first dims equal to q's [B, H, W] and, when last > 0,
// its last dim equal to `last`.
void check_map(const char* arg, const TensorView& t, std::span<const char* const> dims,
               const TensorView& q, int64_t last = 0) {
  if (!t.present()) throw Error(std::string(arg) + ": is required");
  core::check_view(arg, t, dims, dims.size() == 4);
  for (int d = 0; d < 3; ++d)
    if (t.size(d) != q.size(d))
      throw Error(std::string(arg) + ": dims [B, H, W] must be q's " + shape_text(q, 3) +
                  ", got " + shape_text(t, 3));
  if (last > 0 && t.size(3) != last)
    throw Error(std::string(arg) + ": dim 3 (" + dims[3] + ") must be " + std::to_string(last) +
                ", got " + std::to_string(t.size(3)));
}

void check_float(const char* arg, const TensorView& t, DType inputs, bool output) {
  const bool ok = output ? (t.dtype == DType::kF32 || t.dtype == inputs) : t.dtype == inputs;
  if (!ok)
    throw Error(std::string(arg) + ": dtype must be " +
                (output ? "float32 or the inputs' dtype " : "q's dtype ") +
                std::string(dtype_name(inputs)) + ", got " + std::string(dtype_name(t.dtype)));
}

void check_inputs(const TensorView& q, const TensorView& k, const TensorView& v) {
  check_map("q", q, kQK, q);
  if (q.dtype == DType::kBool) throw Error("q: dtype must be float32, float16 or bfloat16, got bool");
  check_map("k", k, kQK, q, q.size(3));
  check_map("v", v, kV, q);
  check_float("k", k, q.dtype, false);
  check_float("v", v, q.dtype, false);
}

void check_lse(const char* arg, const TensorView& lse, const TensorView& q) {
  check_map(arg, lse, kLse, q);
  if (lse.dtype != DType::kF32)
    throw Error(std::string(arg) + ": dtype must be float32, got " + std::string(dtype_name(lse.dtype)));
}

// A [B, H, W, X] map read as attention's [batch, heads, L, X] by columns: dims 1 and 2 swapped,
// so the heads are the map's columns and each column's H pixels form a sequence. Read as it is,
// the same map is the row problem (heads = rows). lse [B, H, W] swaps the same way.
template <class View>
View by_columns(View t) {
  std::swap(t.layout.shape[1], t.layout.shape[2]);
  std::swap(t.layout.strides[1], t.layout.strides[2]);
  return t;
}

// A contiguous f32 map [B, H, W, X] (X = 0: [B, H, W]) over `buffer`, which it sizes.
MutableTensorView scratch(std::vector<float>& buffer, const TensorView& q, int64_t x) {
  const int64_t B = q.size(0), H = q.size(1), W = q.size(2);
  core::check_memory("criss_cross_attention", B * H * W * std::max<int64_t>(x, 1), sizeof(float));
  buffer.assign(B * H * W * std::max<int64_t>(x, 1), 0.0f);
  return {buffer.data(), DType::kF32,
          x ? Layout::contiguous({B, H, W, x}) : Layout::contiguous({B, H, W})};
}

// Key (i', j) is visible to the column query (i, j) unless i' = i: the centre is in its row.
struct CentreMask {
  explicit CentreMask(int64_t h) : bits(h * h, 1) {
    for (int64_t i = 0; i < h; ++i) bits[i * h + i] = 0;
    view = {bits.data(), DType::kBool, Layout::contiguous({h, h})};
  }
  std::vector<uint8_t> bits;
  TensorView view;
};

AttentionParams params_of(const CrissCrossParams& p) {
  AttentionParams a;
  a.scale = p.scale;
  a.num_threads = p.num_threads;
  return a;
}

bool empty_map(const TensorView& q) { return q.size(0) == 0 || q.size(1) == 0 || q.size(2) == 0; }

// dst = a + b over a [B, H, W, X] map, a and b contiguous f32 maps or null: a null a is dst's
// own value (dst then f32), a null b adds nothing. Rows in parallel: memory-bound.
void sum_into(const MutableTensorView& dst, const float* a, const float* b, int threads) {
  const int64_t H = dst.layout.shape[1], W = dst.layout.shape[2], x = dst.layout.shape[3];
  const int64_t* s = dst.layout.strides.data();
  core::parallel_for(dst.layout.shape[0] * H, threads, [&](int64_t bh) {
    std::vector<float> sum(x);
    for (int64_t j = 0; j < W; ++j) {
      const int64_t row = bh * W + j;
      const int64_t base = (bh / H) * s[0] + (bh % H) * s[1] + j * s[2];
      for (int64_t e = 0; e < x; ++e)
        sum[e] = (a ? a[row * x + e] : core::load_element(dst.data, dst.dtype, base + e * s[3])) +
                 (b ? b[row * x + e] : 0.0f);
      core::store_row(sum.data(), x, core::element_ptr(dst.data, dst.dtype, base), dst.dtype, s[3]);
    }
  });
}

void forward_checked(const TensorView& q, const TensorView& k, const TensorView& v,
                     const CrissCrossParams& params, const AttentionOutputs& outputs) {
  check_inputs(q, k, v);
  check_map("out", outputs.out, kV, q, v.size(3));
  check_float("out", outputs.out, q.dtype, true);
  if (outputs.lse.present()) check_lse("lse", outputs.lse, q);
  if (outputs.weights.present())
    throw Error("weights: criss-cross attention returns no weights; leave it absent");
  if (empty_map(q)) return;

  // The row problem writes its result, and the column problem merges its keys into it as it
  // stores each row (AttentionOutputs::accumulate): no second result, no pass to merge them. In
  // out itself when out is f32, else in f32 scratch rounded to out's dtype at the end, once.
  std::vector<float> f32_buffer, lse_buffer;
  const bool in_place = outputs.out.dtype == DType::kF32;
  const MutableTensorView result = in_place ? outputs.out : scratch(f32_buffer, q, v.size(3));
  const MutableTensorView lse = outputs.lse.present() ? outputs.lse : scratch(lse_buffer, q, 0);

  AttentionParams rows = params_of(params);
  attention(q, k, v, rows, {result, lse});
  const CentreMask centre(q.size(1));
  AttentionParams columns = rows;
  columns.mask = centre.view;
  AttentionOutputs merged{by_columns(result), by_columns(lse)};
  merged.accumulate = true;
  attention(by_columns(q), by_columns(k), by_columns(v), columns, merged);
  if (!in_place)
    sum_into(outputs.out, f32_buffer.data(), nullptr, core::resolve_threads(params.num_threads));
}

void backward_checked(const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, const TensorView& lse, const TensorView& dout,
                      const CrissCrossParams& params, const AttentionGradients& grads) {
  check_inputs(q, k, v);
  check_map("out", out, kV, q, v.size(3));
  check_float("out", out, q.dtype, true);
  check_lse("lse", lse, q);
  check_map("dout", dout, kV, q, v.size(3));
  check_float("dout", dout, q.dtype, true);
  check_map("dq", grads.dq, kQK, q, q.size(3));
  check_map("dk", grads.dk, kQK, q, q.size(3));
  check_map("dv", grads.dv, kV, q, v.size(3));
  for (auto [name, g] : {std::pair{"dq", grads.dq}, {"dk", grads.dk}, {"dv", grads.dv}})
    check_float(name, g, q.dtype, true);
  if (grads.dmask.present()) throw Error("dmask: criss-cross attention has no mask; leave it absent");
  if (empty_map(q)) return;

  // Each problem's backward with the merged out and lse gives its keys' share exactly. The row
  // shares go straight into f32 gradients (the column shares are added there), else into f32
  // scratch, so that 16-bit gradients are rounded once.
  const int64_t d = q.size(3), dv = v.size(3);
  std::vector<float> buffers[6];
  auto row_share = [&](const MutableTensorView& g, std::vector<float>& buf, int64_t x) {
    return g.dtype == DType::kF32 ? g : scratch(buf, q, x);
  };
  const AttentionGradients row{row_share(grads.dq, buffers[0], d), row_share(grads.dk, buffers[1], d),
                               row_share(grads.dv, buffers[2], dv), {}};
  const AttentionGradients col{scratch(buffers[3], q, d), scratch(buffers[4], q, d),
                               scratch(buffers[5], q, dv), {}};

  const AttentionParams rows = params_of(params);
  attention_backward(q, k, v, out, lse, dout, rows, row);
  const CentreMask centre(q.size(1));
  AttentionParams columns = rows;
  columns.mask = centre.view;
  attention_backward(by_columns(q), by_columns(k), by_columns(v), by_columns(out),
                     by_columns(lse), by_columns(dout), columns,
                     {by_columns(col.dq), by_columns(col.dk), by_columns(col.dv), {}});

  const int threads = core::resolve_threads(params.num_threads);
  const std::pair<const MutableTensorView*, const MutableTensorView*> shares[] = {
      {&row.dq, &col.dq}, {&row.dk, &col.dk}, {&row.dv, &col.dv}};
  const MutableTensorView* dst[] = {&grads.dq, &grads.dk, &grads.dv};
  for (int i = 0; i < 3; ++i) {
    const auto [row_share, col_share] = shares[i];
    const bool row_in_place = row_share->data == dst[i]->data;
    sum_into(*dst[i], row_in_place ? nullptr : static_cast<const float*>(row_share->data),
             static_cast<const float*>(col_share->data), threads);
  }
}

}  // namespace

void criss_cross_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                           const CrissCrossParams& params, const AttentionOutputs& outputs) {
  core::translate_allocation_failure("criss_cross_attention",
                                     [&] { forward_checked(q, k, v, params, outputs); });
}

void criss_cross_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                    const TensorView& out, const TensorView& lse,
                                    const TensorView& dout, const CrissCrossParams& params,
                                    const AttentionGradients& grads) {
  core::translate_allocation_failure("criss_cross_attention_backward", [&] {
    backward_checked(q, k, v, out, lse, dout, params, grads);
  });
}

}  // namespace xattn
