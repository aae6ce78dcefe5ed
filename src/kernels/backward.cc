// The backward pass (FlashAttention-2's recomputation), compiled once per SIMD target:
//
//   s = scale·q·k,  z = softcap(s) + mask,  p = e^(z - lse),  dp = dout·v,
//   ds = p·(dp - delta)·softcap'(s),  delta_i = dout_i·out_i
//   dv_j = Σ_i p_ij·dout_i,  dk_j = scale·Σ_i ds_ij·q_i,  dq_i = scale·Σ_j ds_ij·k_j
//
// Two passes, each the only writer of what it computes, so there are no atomics and every sum
// runs in a fixed order (same bits for any thread count):
//   keys pass:    per (sequence, kv head, block of keys), over the query rows of the group that
//                 see the block: dk and dv of the block's keys;
//   queries pass: per (sequence, kv head, block of rows of the group), over the keys they see:
//                 dq of the block's rows.
// Probabilities are recomputed from lse a block of N keys at a time (N = lanes), with the head
// dimension in the vector lanes as in the decode layout (dim_lanes-inl.h), so memory stays
// linear in the sequence lengths.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/backward.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <vector>

#include "core/convert.h"
#include "core/parallel.h"
#include "core/problem.h"
#include "core/scratch.h"
#include "core/visibility.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kernels/backward.h"
#include "kernels/convert-inl.h"
#include "kernels/dim_lanes-inl.h"
#include "kernels/vector_exp-inl.h"
#include "kernels/work_item-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace {

using core::BackwardProblem;
using core::Operand;
using core::Problem;

constexpr int64_t kKeyBlock = 64;  // keys per keys-pass item
constexpr int64_t kRowBlock = 32;  // flattened rows (i·G + g) per queries-pass item
constexpr int kRows = 4;           // rows the keys pass takes together

// Row `l` of operand t at (b, h), as f32 padded with zeros to whole vectors.
void load_row(const Operand& t, int64_t b, int64_t h, int64_t l, int64_t width, float* dst) {
  convert_row(core::element_ptr(t.data, t.dtype, t.offset(b, h, l, 0)), t.dtype, t.stride[3],
              width, dst);
  std::fill(dst + width, dst + padded(width), 0.0f);
}

void store_row(const float* src, const Operand& t, int64_t b, int64_t h, int64_t l, int64_t width) {
  void* data = const_cast<void*>(t.data);
  core::store_row(src, width, core::element_ptr(data, t.dtype, t.offset(b, h, l, 0)), t.dtype,
                  t.stride[3]);
}

// What one query row needs to recompute its probabilities and their gradients.
struct QueryRow {
  int64_t b = 0, h = 0, i = 0;  // i: index within the sequence
  core::KeyRange range;         // visible keys
  float lse = 0, delta = 0;
  const float* q = nullptr;     // [D'], unscaled
  const float* dout = nullptr;  // [Dv']

  // Whether the row sees any key of [c0, c1) (a row whose lse is -inf sees nothing).
  bool sees(int64_t c0, int64_t c1) const {
    return lse != -__builtin_inff() && range.lo < c1 && range.hi > c0;
  }
};

float lse_of(const Problem& p, int64_t b, int64_t h, int64_t i) {
  return static_cast<const float*>(p.lse.data)[p.lse.offset(b, h, p.sequences[b].q_start + i, 0)];
}

// p[c] and ds[c] for the n <= N keys c0 .. c0+n of one row (K and V rows f32, padded to whole
// vectors); 0 for keys the row does not see, which are never read into the arithmetic.
// s and dp are the row's q·k and dout·v for those keys (N lanes). dz_out (optional) gets
// p·(dp - delta), the gradient of the mask-added score.
void scores_to_gradients(const Problem& p, const QueryRow& row, const float* s, const float* dp,
                         int64_t c0, int64_t n, float* mask_buf, float* p_out, float* ds_out,
                         float* dz_out = nullptr) {
  const DF df;
  constexpr int64_t N = hn::MaxLanes(DF());
  const VF neg_inf = hn::Set(df, -__builtin_inff());
  const VF raw = hn::Mul(hn::Load(df, s), hn::Set(df, p.scale));
  VF z = raw, slope = hn::Set(df, 1.0f);  // slope: d softcap(s) / ds
  if (p.softcap > 0) {
    const VF x = hn::Mul(raw, hn::Set(df, 1.0f / p.softcap));
    z = hn::Mul(hn::Tanh(df, x), hn::Set(df, p.softcap));
    // 1 - tanh²(x) = 4u / (1 + u)² with u = e^(-2|x|): no cancellation where tanh saturates.
    const VF u = VectorExp(df, hn::Mul(hn::Abs(x), hn::Set(df, -2.0f)));
    const VF one_u = hn::Add(hn::Set(df, 1.0f), u);
    slope = hn::Div(hn::Mul(hn::Set(df, 4.0f), u), hn::Mul(one_u, one_u));
  }
  const VF key = hn::Iota(df, static_cast<float>(c0));
  const float hi = static_cast<float>(std::min(row.range.hi, c0 + n));
  auto visible = hn::And(hn::Ge(key, hn::Set(df, static_cast<float>(row.range.lo))),
                         hn::Lt(key, hn::Set(df, hi)));
  if (p.mask.present()) {
    const Operand& m = p.mask;
    core::load_mask_row(core::element_ptr(m.data, m.dtype, m.offset(row.b, row.h, row.i, c0)),
                        m.dtype, m.stride[3], n, mask_buf);
    std::fill(mask_buf + n, mask_buf + N, 0.0f);
    z = apply_mask(df, z, hn::Load(df, mask_buf));
    visible = hn::And(visible, hn::Ne(z, neg_inf));
  }
  // A probability is at most 1, but the recomputed score and the forward's lse each carry an
  // f32 rounding of |z|·2^-24 (and their key sums differ in order), so e^(z - lse) can exceed
  // it: by a factor e^(1e23) for scores near 1e30. Capping it keeps gradients finite; NaN stays.
  const VF one = hn::Set(df, 1.0f);
  VF prob = VectorExp(df, hn::Sub(z, hn::Set(df, row.lse)));
  prob = hn::IfThenElse(hn::Gt(prob, one), one, prob);
  const VF dz = hn::Mul(prob, hn::Sub(hn::Load(df, dp), hn::Set(df, row.delta)));
  hn::Store(hn::IfThenElseZero(visible, prob), df, p_out);
  hn::Store(hn::IfThenElseZero(visible, hn::Mul(dz, slope)), df, ds_out);
  if (dz_out) hn::Store(hn::IfThenElseZero(visible, dz), df, dz_out);
}

// scores_to_gradients for one row, computing its s and dp from the K and V rows.
void block_gradients(const Problem& p, const QueryRow& row, const float* k, int64_t ldk,
                     const float* v, int64_t ldv, int64_t c0, int64_t n, float* mask_buf,
                     float* p_out, float* ds_out, float* dz_out = nullptr) {
  constexpr int64_t N = hn::MaxLanes(DF());
  alignas(64) float s[N], dp[N];
  qk_block<1>(row.q, 0, padded(p.head_dim) / N, k, ldk, n, s, 0);
  qk_block<1>(row.dout, 0, padded(p.value_dim) / N, v, ldv, n, dp, 0);
  scores_to_gradients(p, row, s, dp, c0, n, mask_buf, p_out, ds_out, dz_out);
}

// acc[0 .. vecs·N) += a · x[0 .. vecs·N)   (any alignment)
void axpy(float a, const float* x, int64_t vecs, float* acc) {
  const DF df;
  const VF va = hn::Set(df, a);
  for (int64_t j = 0; j < vecs * lanes(); j += lanes())
    hn::StoreU(hn::MulAdd(va, hn::LoadU(df, x + j), hn::LoadU(df, acc + j)), df, acc + j);
}

// delta[b][h][i] = dout·out for every row (0 for rows that see nothing).
std::vector<float> row_deltas(const BackwardProblem& bp, int threads) {
  const Problem& p = bp.fwd;
  const int64_t rows = p.max_q_rows, Dv = p.value_dim;
  std::vector<float> delta(p.batch * p.heads_q * rows, 0.0f);
  core::parallel_for(p.batch * p.heads_q, threads, [&](int64_t bh) {
    const int64_t b = bh / p.heads_q, h = bh % p.heads_q;
    const core::Sequence& seq = p.sequences[b];
    core::Carver measure(nullptr);
    measure.take<float>(2 * padded(Dv));
    auto* buf = reinterpret_cast<float*>(
        core::ScratchArena::for_this_thread().bytes(measure.used()));
    float *o = buf, *d = buf + padded(Dv);
    for (int64_t i = 0; i < seq.q_len; ++i) {
      load_row(p.out, b, h, seq.q_start + i, Dv, o);
      load_row(bp.dout, b, h, seq.q_start + i, Dv, d);
      double sum = 0;  // tiny next to the rest; double keeps delta as exact as out allows
      for (int64_t e = 0; e < Dv; ++e) sum += static_cast<double>(o[e]) * d[e];
      delta[bh * rows + i] = static_cast<float>(sum);
    }
  });
  return delta;
}

// Writes sum over `copies` dense row-major arrays (in order) into the view of the same shape.
void store_dense(const std::vector<float>& acc, int copies, int64_t size,
                 const MutableTensorView& view) {
  const int rank = view.layout.rank;
  for (int64_t idx = 0; idx < size; ++idx) {
    float sum = acc[idx];
    for (int c = 1; c < copies; ++c) sum += acc[c * size + idx];
    int64_t offset = 0, rest = idx;
    for (int d = rank - 1; d >= 0; --d) {
      offset += rest % view.layout.shape[d] * view.layout.strides[d];
      rest /= view.layout.shape[d];
    }
    core::store_row(&sum, 1, core::element_ptr(view.data, view.dtype, offset), view.dtype, 1);
  }
}

struct Passes {
  const BackwardProblem& bp;
  const std::vector<float>& delta;

  const Problem& p() const { return bp.fwd; }

  QueryRow row(int64_t b, int64_t h, int64_t i, float* q, float* dout) const {
    const Problem& pr = p();
    const core::Sequence& seq = pr.sequences[b];
    QueryRow r;
    r.b = b, r.h = h, r.i = i;
    r.range = core::visible_keys(pr, seq, i);
    r.lse = r.range.empty() ? -__builtin_inff() : lse_of(pr, b, h, i);
    r.delta = delta[(b * pr.heads_q + h) * pr.max_q_rows + i];
    if (r.lse != -__builtin_inff()) {
      load_row(pr.q, b, h, seq.q_start + i, pr.head_dim, q);
      load_row(bp.dout, b, h, seq.q_start + i, pr.value_dim, dout);
    }
    r.q = q, r.dout = dout;
    return r;
  }

  // dk, dv of keys [j0, j1) of kv head hk, sequence b; with dq_acc ([G·q_rows][D'], flattened
  // rows r = i·G + g), also these keys' terms of dq, added in; with dmask_acc (a dense array of
  // the mask's shape), each of their scores' dz. The rows that see the block are taken kRows at
  // a time, so that each K and V vector loaded serves all of them and each gradient vector is
  // loaded and stored once per group rather than once per row.
  void keys(int64_t b, int64_t hk, int64_t j0, int64_t j1, float* dq_acc = nullptr,
            float* dmask_acc = nullptr) const {
    const Problem& pr = p();
    const core::Sequence& seq = pr.sequences[b];
    const int64_t D = padded(pr.head_dim), Dv = padded(pr.value_dim), nk = j1 - j0, N = lanes();
    core::Carver measure(nullptr);
    auto carve = [&](core::Carver& c, float** out) {
      out[0] = c.take<float>(kKeyBlock * D), out[1] = c.take<float>(kKeyBlock * Dv);
      out[2] = c.take<float>(kKeyBlock * D), out[3] = c.take<float>(kKeyBlock * Dv);
      out[4] = c.take<float>(kRows * D), out[5] = c.take<float>(kRows * Dv);
      out[6] = c.take<float>((5 * kRows + 1) * N);
    };
    float* a[7];
    carve(measure, a);
    core::Carver carver(core::ScratchArena::for_this_thread().bytes(measure.used()));
    carve(carver, a);
    Block blk{a[0], a[1], a[2], a[3], a[4], a[5], a[6]};
    std::fill(blk.dk, blk.dk + nk * D, 0.0f);
    std::fill(blk.dv, blk.dv + nk * Dv, 0.0f);
    // Keys past kv_len exist in the tensor but nobody sees them: zeros stand in for them.
    const int64_t existing = std::clamp<int64_t>(seq.kv_len - j0, 0, nk);
    for (int64_t c = 0; c < existing; ++c) {
      load_row(pr.k, b, hk, seq.kv_start + j0 + c, pr.head_dim, blk.k + c * D);
      load_row(pr.v, b, hk, seq.kv_start + j0 + c, pr.value_dim, blk.v + c * Dv);
    }
    std::fill(blk.k + existing * D, blk.k + kKeyBlock * D, 0.0f);
    std::fill(blk.v + existing * Dv, blk.v + kKeyBlock * Dv, 0.0f);
    const int64_t G = pr.group_size();
    QueryRow group[kRows];
    float* dq_rows[kRows];
    int count = 0;
    for (int64_t g = 0; g < G && existing > 0; ++g)
      for (int64_t i = 0; i < seq.q_len; ++i) {
        const core::KeyRange range = core::visible_keys(pr, seq, i);
        if (range.lo >= j1 || range.hi <= j0) continue;
        group[count] = row(b, hk * G + g, i, blk.q + count * D, blk.dout + count * Dv);
        dq_rows[count] = dq_acc ? dq_acc + (i * G + g) * D : nullptr;
        if (group[count].lse != -__builtin_inff() && ++count == kRows) {
          rows_on_keys(group, count, dq_rows, dmask_acc, blk, j0, j1);
          count = 0;
        }
      }
    if (count > 0) rows_on_keys(group, count, dq_rows, dmask_acc, blk, j0, j1);
    for (int64_t c = 0; c < nk; ++c) {
      store_row(blk.dk + c * D, bp.dk, b, hk, seq.kv_start + j0 + c, pr.head_dim);
      store_row(blk.dv + c * Dv, bp.dv, b, hk, seq.kv_start + j0 + c, pr.value_dim);
    }
  }

  // A key block's scratch: K and V rows, their gradient accumulators, a group's q and dout
  // rows, and per-row vectors of N keys (mask values, s, dp, p, ds, dz).
  struct Block {
    float *k, *v, *dk, *dv, *q, *dout, *lanes;
  };

  // The terms of `count` rows (padded to kRows with zero rows that see nothing) for the keys
  // [j0, j1) of the block: dv += p·dout, dk += scale·ds·q, dq (where given) += scale·ds·k, and
  // the mask gradient (where given) += dz. A zero p or ds is skipped, not multiplied: masked
  // keys' values never reach the arithmetic.
  void rows_on_keys(QueryRow* rows, int count, float* const* dq_rows, float* dmask_acc,
                    const Block& blk, int64_t j0, int64_t j1) const {
    const Problem& pr = p();
    const DF df;
    const int64_t D = padded(pr.head_dim), Dv = padded(pr.value_dim), N = lanes();
    std::fill(blk.q + count * D, blk.q + kRows * D, 0.0f);
    std::fill(blk.dout + count * Dv, blk.dout + kRows * Dv, 0.0f);
    float *mask_buf = blk.lanes, *s = mask_buf + N, *dp = s + kRows * N;
    float *prob = dp + kRows * N, *ds = prob + kRows * N, *dz = ds + kRows * N;
    const Operand& dm = bp.dmask_dense;
    for (int64_t c0 = j0; c0 < j1; c0 += N) {
      const int64_t n = std::min(N, j1 - c0), c = c0 - j0;
      qk_block<kRows>(blk.q, D, D / N, blk.k + c * D, D, n, s, N);
      qk_block<kRows>(blk.dout, Dv, Dv / N, blk.v + c * Dv, Dv, n, dp, N);
      for (int r = 0; r < kRows; ++r) {
        if (r < count && rows[r].sees(c0, c0 + n)) {
          scores_to_gradients(pr, rows[r], s + r * N, dp + r * N, c0, n, mask_buf, prob + r * N,
                              ds + r * N, dmask_acc ? dz + r * N : nullptr);
          if (dmask_acc)
            for (int64_t x = 0; x < n; ++x)
              dmask_acc[dm.offset(rows[r].b, rows[r].h, rows[r].i, c0 + x)] += dz[r * N + x];
        } else {
          std::fill(prob + r * N, prob + (r + 1) * N, 0.0f);
          std::fill(ds + r * N, ds + (r + 1) * N, 0.0f);
        }
      }
      for (int64_t x = 0; x < n; ++x) {
        add_rows(prob, x, blk.dout, Dv, 1.0f, blk.dv + (c + x) * Dv);
        add_rows(ds, x, blk.q, D, pr.scale, blk.dk + (c + x) * D);
      }
      for (int r = 0; r < count; ++r) {
        if (!dq_rows[r]) continue;
        for (int64_t j = 0; j < D; j += N) {
          VF acc = hn::LoadU(df, dq_rows[r] + j);
          for (int64_t x = 0; x < n; ++x) {
            const float w = ds[r * N + x];
            if (w == 0) continue;
            acc = hn::MulAdd(hn::Set(df, pr.scale * w), hn::Load(df, blk.k + (c + x) * D + j), acc);
          }
          hn::StoreU(acc, df, dq_rows[r] + j);
        }
      }
    }
  }

  // acc[0 .. width) += scale · Σ_r weight[r][x] · rows[r][0 .. width), skipping zero weights.
  static void add_rows(const float* weight, int64_t x, const float* rows, int64_t width,
                       float scale, float* acc) {
    const DF df;
    const int64_t N = lanes();
    bool any = false;
    for (int r = 0; r < kRows; ++r) any |= weight[r * N + x] != 0;
    if (!any) return;
    for (int64_t j = 0; j < width; j += N) {
      VF a = hn::Load(df, acc + j);
      for (int r = 0; r < kRows; ++r) {
        const float w = weight[r * N + x];
        if (w != 0) a = hn::MulAdd(hn::Set(df, scale * w), hn::Load(df, rows + r * width + j), a);
      }
      hn::Store(a, df, acc + j);
    }
  }

  // Every gradient of kv head hk of sequence b in one pass over its key blocks: dq accumulates
  // across the blocks in key order, the order the queries pass sums in, so the bits match; the
  // mask gradient (when dmask_acc is given) in the order of the key blocks.
  void head(int64_t b, int64_t hk, float* dmask_acc) const {
    const Problem& pr = p();
    const core::Sequence& seq = pr.sequences[b];
    const int64_t D = padded(pr.head_dim), rows = seq.q_rows * pr.group_size();
    thread_local std::vector<float> dq;  // reused across items and calls
    dq.assign(rows * D, 0.0f);
    for (int64_t j0 = 0; j0 < seq.kv_rows; j0 += kKeyBlock)
      keys(b, hk, j0, std::min(seq.kv_rows, j0 + kKeyBlock), dq.data(), dmask_acc);
    for (int64_t r = 0; r < rows; ++r)
      store_row(dq.data() + r * D, bp.dq, b, hk * pr.group_size() + r % pr.group_size(),
                seq.q_start + r / pr.group_size(), pr.head_dim);
  }

  // dq of the flattened rows [r0, r1) (r = i·G + g) of kv head hk, sequence b; and, when
  // dmask_acc is given, each score's dz added into it (a dense array of the mask's shape).
  void queries(int64_t b, int64_t hk, int64_t r0, int64_t r1, float* dmask_acc) const {
    const Problem& pr = p();
    const core::Sequence& seq = pr.sequences[b];
    const int64_t D = padded(pr.head_dim), Dv = padded(pr.value_dim), N = lanes();
    const int64_t G = pr.group_size(), rows = r1 - r0;
    auto carve = [&](core::Carver& c, float** out) {
      out[0] = c.take<float>(kRowBlock * D), out[1] = c.take<float>(kRowBlock * Dv);
      out[2] = c.take<float>(kRowBlock * D), out[3] = c.take<float>(N * D);
      out[4] = c.take<float>(N * Dv), out[5] = c.take<float>(4 * N);
      out[6] = c.take<float>(N);
    };
    float* a[7];
    core::Carver measure(nullptr);
    carve(measure, a);
    core::Carver carver(core::ScratchArena::for_this_thread().bytes(measure.used()));
    carve(carver, a);
    float *q = a[0], *dout = a[1], *dq = a[2], *kb = a[3], *vb = a[4];
    float *mask_buf = a[5], *prob = a[5] + N, *ds = a[5] + 2 * N, *dz = a[6];
    const Operand& dm = bp.dmask_dense;
    std::fill(dq, dq + rows * D, 0.0f);
    QueryRow r[kRowBlock];
    int64_t lo = seq.kv_len, hi = 0;
    for (int64_t x = 0; x < rows; ++x) {
      const int64_t flat = r0 + x;
      r[x] = row(b, hk * G + flat % G, flat / G, q + x * D, dout + x * Dv);
      if (r[x].lse == -__builtin_inff() || r[x].range.empty()) continue;
      lo = std::min(lo, r[x].range.lo), hi = std::max(hi, r[x].range.hi);
    }
    for (int64_t c0 = lo; c0 < hi; c0 += N) {
      const int64_t n = std::min(N, hi - c0);
      for (int64_t c = 0; c < n; ++c) {
        load_row(pr.k, b, hk, seq.kv_start + c0 + c, pr.head_dim, kb + c * D);
        load_row(pr.v, b, hk, seq.kv_start + c0 + c, pr.value_dim, vb + c * Dv);
      }
      std::fill(kb + n * D, kb + N * D, 0.0f);
      std::fill(vb + n * Dv, vb + N * Dv, 0.0f);
      for (int64_t x = 0; x < rows; ++x) {
        if (!r[x].sees(c0, c0 + n)) continue;
        block_gradients(pr, r[x], kb, D, vb, Dv, c0, n, mask_buf, prob, ds,
                        dmask_acc ? dz : nullptr);
        for (int64_t c = 0; c < n; ++c)
          if (ds[c] != 0) axpy(pr.scale * ds[c], kb + c * D, D / N, dq + x * D);
        if (dmask_acc)
          for (int64_t c = 0; c < n; ++c) dmask_acc[dm.offset(b, r[x].h, r[x].i, c0 + c)] += dz[c];
      }
    }
    for (int64_t x = 0; x < rows; ++x)
      store_row(dq + x * D, bp.dq, b, r[x].h, seq.q_start + r[x].i, pr.head_dim);
  }
};

}  // namespace

void Backward(const BackwardProblem& bp) {
  const Problem& p = bp.fwd;
  const int threads = core::resolve_threads(p.num_threads);
  const std::vector<float> delta = row_deltas(bp, threads);
  const Passes passes{bp, delta};

  // The mask gradient. When no two rows share a mask row, every element has one writer (the
  // item owning the row); when the mask broadcasts over b, h or i, each thread sums into its own
  // copy, items go to threads in a fixed order, and the copies are added in thread order.
  const bool dmask = bp.dmask_view.present(), shared = dmask && bp.dmask_shared;
  const int copies = shared ? threads : 1;
  std::vector<float> acc(dmask ? copies * bp.dmask_size : 0, 0.0f);
  auto dmask_of = [&](int t) { return dmask ? acc.data() + (shared ? t : 0) * bp.dmask_size : nullptr; };

  // Enough kv heads to keep the threads busy: one pass per head. Otherwise the keys and
  // queries passes, which split the heads further.
  if (p.batch * p.heads_kv >= threads) {
    auto item = [&](int64_t n, int t) { passes.head(n / p.heads_kv, n % p.heads_kv, dmask_of(t)); };
    if (shared) core::parallel_for_static(p.batch * p.heads_kv, threads, item);
    else core::parallel_for(p.batch * p.heads_kv, threads, [&](int64_t n) { item(n, 0); });
    if (dmask) store_dense(acc, copies, bp.dmask_size, bp.dmask_view);
    return;
  }
  struct Item {
    int64_t b, hk, begin, end;
  };
  std::vector<Item> keys, queries;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t hk = 0; hk < p.heads_kv; ++hk) {
      const int64_t kv_rows = p.sequences[b].kv_rows;
      for (int64_t j0 = 0; j0 < kv_rows; j0 += kKeyBlock)
        keys.push_back({b, hk, j0, std::min(kv_rows, j0 + kKeyBlock)});
      const int64_t rows = p.sequences[b].q_rows * p.group_size();
      for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock)
        queries.push_back({b, hk, r0, std::min(rows, r0 + kRowBlock)});
    }
  core::parallel_for(static_cast<int64_t>(keys.size()), threads, [&](int64_t n) {
    const Item& w = keys[n];
    passes.keys(w.b, w.hk, w.begin, w.end);
  });
  if (!dmask) {
    core::parallel_for(static_cast<int64_t>(queries.size()), threads, [&](int64_t n) {
      const Item& w = queries[n];
      passes.queries(w.b, w.hk, w.begin, w.end, nullptr);
    });
    return;
  }
  core::parallel_for_static(static_cast<int64_t>(queries.size()), threads, [&](int64_t n, int t) {
    const Item& w = queries[n];
    passes.queries(w.b, w.hk, w.begin, w.end, dmask_of(t));
  });
  store_dense(acc, copies, bp.dmask_size, bp.dmask_view);
}

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace xattn::kernels {

HWY_EXPORT(Backward);

void run_backward(const core::BackwardProblem& p) { HWY_DYNAMIC_DISPATCH(Backward)(p); }

}  // namespace xattn::kernels
#endif
