// torch.nn.MultiheadAttention's masks translated into the kernel's lengths and mask views.

#include "nn/mha_masks.h"

#include <string>

#include "core/convert.h"
#include "core/out_of_memory.h"
#include "core/validate.h"
#include "nn/shapes.h"
#include "xattn/error.h"

namespace xattn::nn {
namespace {

constexpr float kNegInf = -__builtin_inff();

std::string list(std::initializer_list<int64_t> dims) {
  return shape_string(std::span<const int64_t>(dims.begin(), dims.size()));
}

// A mask as [A, rows, cols] (A = 1 or one slice per (batch, head)), with its additive value.
struct Mask3 {
  TensorView view;
  float at(int64_t a, int64_t r, int64_t c) const {
    const float x = core::load_element(view.data, view.dtype,
                                       a * view.stride(0) + r * view.stride(1) + c * view.stride(2));
    if (view.dtype == DType::kBool) return x != 0.0f ? kNegInf : 0.0f;  // torch: true = masked
    return x;
  }
};

Mask3 padding_mask(const TensorView& m, const MaskGeometry& g) {
  const int64_t N = g.batch, S = g.kv_len;
  if (g.batched ? m.rank() != 2 || m.size(0) != N || m.size(1) != S
                : m.rank() != 1 || m.size(0) != S)
    throw Error("key_padding_mask: expected shape " + (g.batched ? list({N, S}) : list({S})) +
                " (batch, source length), got " + shape_string(m));
  // As [N, 1, S]: one row per sequence.
  const int64_t s0 = g.batched ? m.stride(0) : 0, s1 = m.stride(m.rank() - 1);
  return {{m.data, m.dtype, Layout::strided({N, 1, S}, {s0, 0, s1})}};
}

Mask3 attention_mask(const TensorView& m, const MaskGeometry& g) {
  const int64_t L = g.q_len, S = g.kv_len, slices = g.batch * g.beams * g.num_heads;
  if (m.rank() == 2) {
    if (m.size(0) != L || m.size(1) != S)
      throw Error("attn_mask: a 2-D mask must be [L, S] = " + list({L, S}) + ", got " +
                  shape_string(m));
    return {{m.data, m.dtype, Layout::strided({1, L, S}, {0, m.stride(0), m.stride(1)})}};
  }
  if (m.rank() == 3) {
    if (m.size(0) != slices || m.size(1) != L || m.size(2) != S)
      throw Error("attn_mask: a 3-D mask must be " +
                  std::string(g.batched ? "[N·num_heads, L, S] = " : "[num_heads, L, S] = ") +
                  list({slices, L, S}) + ", got " + shape_string(m));
    return {m};
  }
  throw Error("attn_mask: must be 2-D [L, S] or 3-D, got rank " + std::to_string(m.rank()));
}

// Per-sequence key counts when every padding row is false then true (padding only at the end).
bool tail_lengths(const Mask3& pad, int64_t batch, int64_t kv_len, std::vector<int64_t>& lens) {
  if (pad.view.dtype != DType::kBool) return false;
  lens.assign(static_cast<size_t>(batch), kv_len);
  for (int64_t n = 0; n < batch; ++n) {
    int64_t s = 0;
    while (s < kv_len && pad.at(n, 0, s) == 0.0f) ++s;
    lens[n] = s;
    for (; s < kv_len; ++s)
      if (pad.at(n, 0, s) == 0.0f) return false;
  }
  return true;
}

// A bool mask [A, rows, cols] inverted into the kernel's convention (true = may attend).
TensorView allowed_copy(const Mask3& m, std::vector<uint8_t>& storage) {
  const TensorView& v = m.view;
  const int64_t A = v.size(0), R = v.size(1), C = v.size(2);
  core::check_memory("attn_mask", A * R, C);  // (A·R·C: the attention's own score count)
  core::translate_allocation_failure("attn_mask",
                                     [&] { storage.resize(static_cast<size_t>(A * R * C)); });
  for (int64_t a = 0; a < A; ++a)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) storage[(a * R + r) * C + c] = m.at(a, r, c) == 0.0f;
  return {storage.data(), DType::kBool,
          Layout::strided({A, R, C}, {A == 1 ? 0 : R * C, C, 1})};
}

// The attention mask as a [N, H, beams·L, S] view, when its strides allow one.
bool attention_view(const TensorView& m, const MaskGeometry& g, TensorView& out) {
  const int64_t rows = g.beams * g.q_len;
  int64_t row_stride = m.stride(1);
  if (g.beams > 1) {
    if (g.q_len != 1 || m.size(0) != 1) return false;  // beams·L rows must walk one stride
    row_stride = 0;
  }
  const bool per_head = m.size(0) != 1;
  out = {m.data, m.dtype,
         Layout::strided({g.batch, g.num_heads, rows, g.kv_len},
                         {per_head ? g.num_heads * m.stride(0) : 0, per_head ? m.stride(0) : 0,
                          row_stride, m.stride(2)})};
  return true;
}

// Everything summed into one additive [N, H or 1, beams·L, S] tensor.
void combine(const Mask3* attn, const Mask3* pad, const MaskGeometry& g, KernelMask& plan) {
  const bool per_head = attn && attn->view.size(0) != 1;
  const int64_t heads = per_head ? g.num_heads : 1, L = g.q_len, S = g.kv_len;
  plan.combined = Tensor({g.batch, heads, g.beams * L, S});
  float* out = plan.combined.data();
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t k = 0; k < g.beams; ++k)
        for (int64_t l = 0; l < L; ++l) {
          const int64_t slice = per_head ? (n * g.beams + k) * g.num_heads + h : 0;
          for (int64_t s = 0; s < S; ++s)
            *out++ = (attn ? attn->at(slice, l, s) : 0.0f) + (pad ? pad->at(n, 0, s) : 0.0f);
        }
  TensorView v = plan.combined.view();
  if (!per_head) v.layout.strides[1] = 0;
  plan.view = v;
}

}  // namespace

void plan_masks(const TensorView& key_padding_mask, const TensorView& attn_mask,
                const MaskGeometry& g, KernelMask& plan) {
  const bool has_pad = key_padding_mask.present(), has_attn = attn_mask.present();
  const Mask3 pad = has_pad ? padding_mask(key_padding_mask, g) : Mask3{};
  Mask3 attn = has_attn ? attention_mask(attn_mask, g) : Mask3{};
  const bool lengths = has_pad && tail_lengths(pad, g.batch, g.kv_len, plan.kv_lens);
  if (!lengths) plan.kv_lens.clear();

  if (!has_attn) {
    if (!has_pad || lengths) return;
    const TensorView rows = pad.view.dtype == DType::kBool ? allowed_copy(pad, plan.allowed)
                                                           : pad.view;
    plan.view = {rows.data, rows.dtype,
                 Layout::strided({g.batch, 1, 1, g.kv_len}, {rows.stride(0), 0, 0, rows.stride(2)})};
    return;
  }
  if (has_pad && !lengths) return combine(&attn, &pad, g, plan);
  if (!attention_view(attn.view, g, plan.view)) {
    plan.kv_lens.clear();
    return combine(&attn, has_pad ? &pad : nullptr, g, plan);
  }
  if (attn.view.dtype == DType::kBool)  // the converted copy has the shape that fit a view
    attention_view(allowed_copy(attn, plan.allowed), g, plan.view);
}

}  // namespace xattn::nn
