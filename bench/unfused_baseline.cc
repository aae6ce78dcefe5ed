#include "bench/unfused_baseline.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "xattn/half.h"

namespace xattn::bench {
namespace {

size_t numel(const TensorView& t) { return static_cast<size_t>(t.layout.numel()); }

AlignedBuffer<float> f32_copy_space(const TensorView& t) {
  return t.dtype == DType::kF32 ? AlignedBuffer<float>() : AlignedBuffer<float>(numel(t));
}

// The operand as f32: itself, or its conversion into `space` (timed: part of the unfused path).
const float* as_f32(const TensorView& t, AlignedBuffer<float>& space, int threads) {
  if (t.dtype == DType::kF32) return static_cast<const float*>(t.data);
  const auto* src = static_cast<const uint16_t*>(t.data);
  float* dst = space.data();
  const int64_t n = static_cast<int64_t>(space.size());
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
  return dst;
}

// Softmax of row[0..visible) in place, max-subtracted; keys from `visible` on get weight 0.
void softmax_row(float* row, int64_t visible, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < visible; ++j) m = std::max(m, row[j]);
  float sum = 0;
  for (int64_t j = 0; j < visible; ++j) {
    row[j] = std::exp(row[j] - m);
    sum += row[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < visible; ++j) row[j] *= inv;
  std::fill(row + visible, row + n, 0.0f);
}

}  // namespace

std::string blas_description() {
  std::string config = openblas_get_config();
  while (!config.empty() && config.back() == ' ') config.pop_back();
  return config;
}

UnfusedBaseline::UnfusedBaseline(const Operands& in)
    : in_(in),
      q32_(f32_copy_space(in.q())),
      k32_(f32_copy_space(in.k())),
      v32_(f32_copy_space(in.v())),
      out_(static_cast<size_t>(in.out_size())) {}

void UnfusedBaseline::rows(int64_t bh, int64_t r0, int64_t r1, const float* q, const float* k, const float* v,
                           float* S) {
  const Shape& s = in_.shape();
  const int64_t b = bh / s.Hq, h = bh % s.Hq, n = r1 - r0;
  const int64_t Lq = s.Lq, Lk = s.Lk, D = s.D, Dv = s.Dv();
  const int64_t kv_head = b * s.Hkv + h / (s.Hq / s.Hkv);
  const float* qh = q + (bh * Lq + r0) * D;
  const float* kh = k + kv_head * Lk * D;
  const float* vh = v + kv_head * Lk * Dv;
  float* oh = out_.data() + (bh * Lq + r0) * Dv;
  // The scale goes into sgemm's alpha: free there, and the baseline should be a good one.
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, Lk, D, scale, qh, D, kh, D, 0.0f, S, Lk);
  for (int64_t i = 0; i < n; ++i) {
    softmax_row(S + i * Lk, s.causal ? std::min(r0 + i + 1, Lk) : Lk, Lk);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, Dv, Lk, 1.0f, S, Lk, vh, Dv, 0.0f, oh, Dv);
}

void UnfusedBaseline::run(int threads) {
  const Shape& s = in_.shape();
  const float* q = as_f32(in_.q(), q32_, threads);
  const float* k = as_f32(in_.k(), k32_, threads);
  const float* v = as_f32(in_.v(), v32_, threads);
  openblas_set_num_threads(1);
  // Work items are heads, split into row blocks only when there are too few heads to go round.
  const int64_t heads = s.B * s.Hq;
  const int64_t blocks = std::min(s.Lq, (threads + heads - 1) / heads);
  const int64_t block_rows = (s.Lq + blocks - 1) / blocks;
  const int64_t block_scores = block_rows * s.Lk;
  // Grown on the first (warm-up) call at a thread count, so never inside the timed calls.
  const size_t need = static_cast<size_t>(block_scores) * static_cast<size_t>(threads);
  if (scores_.size() < need) scores_ = AlignedBuffer<float>(need);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t item = 0; item < heads * blocks; ++item) {
    const int64_t r0 = item % blocks * block_rows;
    rows(item / blocks, r0, std::min(r0 + block_rows, s.Lq), q, k, v,
         scores_.data() + omp_get_thread_num() * block_scores);
  }
}

}  // namespace xattn::bench
