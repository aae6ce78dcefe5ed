// The backward pass (FlashAttention-2's recomputation), compiled once per SIMD target:
//
//   s = scale·q·k,  z = softcap(s) + mask,  p = e^(z - lse),  dp = dout·v,
//   ds = p·(dp - delta)·softcap'(s),  delta_i = dout_i·out_i
//   dv_j = Σ_i p_ij·dout_i,  dk_j = scale·Σ_i ds_ij·q_i,  dq_i = scale·Σ_j ds_ij·k_j
//
// The query rows of each (sequence, kv head), flattened r = i·G + g, are packed into tiles of
// Br rows (RowTiles): Qᵀ and dOᵀ with the rows in the vector lanes, as the forward keeps them,
// and Q and dO in their natural layout. Every (tile, block of keys) pair is then five
// register-blocked products (the forward's qk_tile for Sᵀ and dPᵀ, broadcast_tile for the
// rest), with the probabilities recomputed in between (tile_pair):
//   Sᵀ = K·Qᵀ,  dPᵀ = V·dOᵀ,  [P, dS from Sᵀ, dPᵀ],  dV += Pᵀ·dO,  dK += dSᵀ·Q,  dQᵀ += Kᵀ·dSᵀ
// Tiles of at most half a vector of rows (decoder steps, a CLS token) compute Sᵀ and dPᵀ with
// the head dimension in the lanes instead (qk_block), and keep dQ in the natural layout.
// Each gradient has one writer and sums in a fixed order, so there are no atomics and the bits
// are the same for any thread count:
//   one kv head per thread when there are enough of them, in one of two loop orders that add
//   every sum in the same order (dK, dV of a block over the tiles in order; dQᵀ of a tile over
//   the blocks in order), so they give the same bits: the key blocks outside, each over every
//   tile packed up front; or, when the head's keys take less room than its rows and fit in L2,
//   the tiles outside, each packed as it comes and run over every key block;
//   otherwise two passes over the same pairs in the same orders: per key block (dK, dV), and
//   per tile (dQ).
// Memory is linear in the sequence lengths: the packed rows and one block's scratch.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/backward.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "core/convert.h"
#include "core/cpu_profile.h"
#include "core/parallel.h"
#include "core/problem.h"
#include "core/profile.h"
#include "core/scratch.h"
#include "core/visibility.h"
#include "hwy/aligned_allocator.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kernels/backward.h"
#include "kernels/convert-inl.h"
#include "kernels/dim_lanes-inl.h"
#include "kernels/score_tile-inl.h"
#include "kernels/tile_kernels-inl.h"
#include "kernels/transpose-inl.h"
#include "kernels/vector_exp-inl.h"
#include "kernels/work_item-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace {

using core::BackwardProblem;
using core::KeyRange;
using core::Operand;
using core::Problem;
using core::profile::Scope;
namespace profile = core::profile;
constexpr ALayout kByColumn = ALayout::kByColumn, kByDepth = ALayout::kByDepth;

// Keys per block. Each tile pair re-reads its tile's packed rows (80 KB at D = 64) for the
// block's products, so larger blocks re-read them less often: 128 keys took 0.94-0.96x the time
// of 64 on self-2k-d64 and perceiver-encode (one thread, an Intel Xeon); 96 and 192 were slower.
constexpr int64_t kKeyBlock = 128;

// Row vectors per tile: 64 rows with 32 registers, as many with 16 (8 vectors of 8). The rows
// are the depth of the dK and dV products, which load and store the block's sums once per tile
// pair, so deeper tiles move them less; the products with the rows in the lanes take them
// kTileRowVecs at a time (by_register_rows). On a Zen 3 (AVX2), tiles of 8 vectors took
// 0.92-0.96x the backward's time of tiles of 2 (kTileRowVecs) at one thread, 0.85-0.93x at two.
constexpr int kBwdTileVecs = kVectorRegisters == 32 ? 4 : 8;

float lse_of(const Problem& p, int64_t b, int64_t h, int64_t i) {
  return static_cast<const float*>(p.lse.data)[p.lse.offset(b, h, p.sequences[b].q_start + i, 0)];
}

void store_row(const float* src, const Operand& t, int64_t b, int64_t h, int64_t l, int64_t width) {
  void* data = const_cast<void*>(t.data);
  core::store_row(src, width, core::element_ptr(data, t.dtype, t.offset(b, h, l, 0)), t.dtype,
                  t.stride[3]);
}

// delta = dout·out of a row, in double: each product is exact in it, so delta is as exact as
// out allows. A vector of sums (a fixed order for each SIMD target), not one chain of dependent
// adds, which cost as much as packing the row.
float row_delta(const float* out, const float* dout, int64_t n) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const int64_t M = static_cast<int64_t>(hn::Lanes(dd));
  auto sums = hn::Zero(dd);
  int64_t e = 0;
  for (; e + M <= n; e += M)
    sums = hn::MulAdd(hn::PromoteTo(dd, hn::LoadU(df, out + e)),
                      hn::PromoteTo(dd, hn::LoadU(df, dout + e)), sums);
  double sum = hn::GetLane(hn::SumOfLanes(dd, sums));
  for (; e < n; ++e) sum += static_cast<double>(out[e]) * dout[e];
  return static_cast<float>(sum);
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

// Row l of t times `scale` into dst as whole vectors, zeros past width; f32 rows in one pass
// (a copy, then vector loads of what its last stores wrote, made store forwarding fail).
void padded_row(const Operand& t, int64_t b, int64_t h, int64_t l, int64_t width, float scale,
                float* dst) {
  const DF df;
  const int64_t N = lanes();
  const float* src = operand_rows(t, b, h, l, width, 1, dst, false).data;  // or converted in dst
  const VF s = hn::Set(df, scale);
  int64_t i = 0;
  for (; i + N <= width; i += N) hn::StoreU(hn::Mul(s, hn::LoadU(df, src + i)), df, dst + i);
  if (i == width) return;
#if HWY_MEM_OPS_MIGHT_FAULT
  for (; i < width; ++i) dst[i] = scale * src[i];
  std::fill(dst + width, dst + padded(width), 0.0f);
#else
  hn::StoreU(hn::Mul(s, hn::MaskedLoad(hn::FirstN(df, width - i), df, src + i)), df, dst + i);
#endif
}

// The query rows of one (sequence, kv head), packed in tiles of br rows: every tile up front, or
// one at a time into the same storage. Rows that see nothing (past q_len, an empty range, lse =
// -inf) and the padding of the last tile have zero q, dout and delta, an empty range and base 0,
// so a tile holding one is never interior.
struct RowTiles {
  int64_t b = 0, hk = 0, rows = 0, br = 0, tiles = 0;
  int64_t D = 0, Dv = 0;  // padded to whole vectors
  // Few rows (at most half a vector, as in a decoder step or a CLS token): lanes of Sᵀ would
  // go to waste in the products over the head dimension, so Sᵀ and dPᵀ are computed with the
  // head dimension in the lanes (qk_block), and dQ is kept in the natural layout [br][D].
  bool few = false;
  int64_t tile_floats = 0;
  int64_t tile_step = 0;  // from one tile's storage to the next: tile_floats, or 0 (one at a time)
  // Per tile: qt [D][br], dot [Dv][br], qs [br][D], dos [br][Dv], dqt [D][br], base [br],
  // delta [br]; aligned to whole vectors, kept (and grown) across calls.
  hwy::AlignedFreeUniquePtr<float[]> data;
  int64_t capacity = 0;
  std::vector<int64_t> row_h, row_i;  // [tiles·br]
  std::vector<KeyRange> range;        // [tiles·br]
  struct Tile {
    KeyRange every, some;  // keys every row sees; the span of keys some row sees
    bool finite = true;    // q and dout rows hold only finite values
  };
  std::vector<Tile> tile;
  std::vector<float> out_row;  // a row of out as f32, when it is not

  float* qt(int64_t t) { return data.get() + t * tile_step; }
  float* dot(int64_t t) { return qt(t) + D * br; }
  float* qs(int64_t t) { return dot(t) + Dv * br; }
  float* dos(int64_t t) { return qs(t) + br * D; }
  float* dqt(int64_t t) { return dos(t) + br * Dv; }
  float* base(int64_t t) { return dqt(t) + D * br; }
  float* delta(int64_t t) { return base(t) + br; }

  // The tiles of (b_, hk_)'s rows and storage for every tile, or for one at a time.
  void plan(const Problem& p, int64_t b_, int64_t hk_, bool one_at_a_time) {
    const int64_t N = lanes();
    b = b_, hk = hk_, rows = p.sequences[b].q_rows * p.group_size();
    br = rows <= N ? N : rows <= 2 * N ? 2 * N : kBwdTileVecs * N;
    tiles = (rows + br - 1) / br;
    few = 2 * rows <= N;
    D = padded(p.head_dim), Dv = padded(p.value_dim);
    tile_floats = br * (3 * D + 2 * Dv + 2);
    tile_step = one_at_a_time ? 0 : tile_floats;
    const int64_t floats = one_at_a_time ? tile_floats : tiles * tile_floats;
    if (floats > capacity) capacity = floats, data = hwy::AllocateAligned<float>(capacity);
    row_h.assign(tiles * br, 0), row_i.assign(tiles * br, 0);
    range.assign(tiles * br, KeyRange{});
    tile.assign(tiles, Tile{});
    out_row.resize(Dv);
  }

  // Every tile, up front.
  void pack(const BackwardProblem& bp, int64_t b_, int64_t hk_) {
    plan(bp.fwd, b_, hk_, false);
    for (int64_t t = 0; t < tiles; ++t) pack_tile(bp, t);
  }

  // Tile t's rows into its slot, and what they see into tile[t] and range.
  void pack_tile(const BackwardProblem& bp, int64_t t) {
    Scope scope(profile::kBwdPack);
    const Problem& p = bp.fwd;
    const core::Sequence& seq = p.sequences[b];
    const int64_t G = p.group_size(), N = lanes();
    Tile& info = tile[t];
    info.every = {0, seq.kv_len}, info.some = {seq.kv_len, 0};
    // Zeros where nothing below writes: dQᵀ's sums, and Qᵀ's and dOᵀ's padding dims (the
    // rows' own zeros are written with them). Not the whole tile: with few keys, zeroing
    // every tile of a head cost as much as the packing itself.
    std::fill_n(dqt(t), D * br, 0.0f);
    std::fill(qt(t) + p.head_dim * br, qt(t) + D * br, 0.0f);
    std::fill(dot(t) + p.value_dim * br, dot(t) + Dv * br, 0.0f);
    for (int64_t x = 0; x < br; ++x) {
      const int64_t r = t * br + x, i = r / G, h = hk * G + r % G;
      KeyRange seen;
      if (r < rows) {
        row_h[r] = h, row_i[r] = i;
        seen = core::visible_keys(p, seq, i);
        if (!seen.empty() && lse_of(p, b, h, i) == -__builtin_inff()) seen = {};  // saw nothing
      }
      range[r] = seen;
      info.every = {std::max(info.every.lo, seen.lo), std::min(info.every.hi, seen.hi)};
      float *q = qs(t) + x * D, *dout = dos(t) + x * Dv;
      if (seen.empty()) {
        info.every = {};
        std::fill_n(q, D, 0.0f), std::fill_n(dout, Dv, 0.0f);
        base(t)[x] = delta(t)[x] = 0.0f;
        continue;
      }
      info.some = {std::min(info.some.lo, seen.lo), std::max(info.some.hi, seen.hi)};
      const int64_t l = seq.q_start + i;
      padded_row(p.q, b, h, l, p.head_dim, p.scale, q);
      padded_row(bp.dout, b, h, l, p.value_dim, 1.0f, dout);
      info.finite &= all_finite(q, D, 1, p.head_dim) && all_finite(dout, Dv, 1, p.value_dim);
      base(t)[x] = lse_of(p, b, h, i);
      const float* out = operand_rows(p.out, b, h, l, p.value_dim, 1, out_row.data(), false).data;
      delta(t)[x] = row_delta(out, dout, p.value_dim);
    }
    // Qᵀ and dOᵀ from the rows, a vector of rows at a time (padding rows are zeros).
    const float* row_of[kMaxLanes];
    for (int64_t x0 = 0; x0 < br; x0 += N) {
      for (int64_t r = 0; r < N; ++r) row_of[r] = qs(t) + (x0 + r) * D;
      for (int64_t d0 = 0; d0 < p.head_dim; d0 += N)
        pack_transposed(row_of, N, d0, std::min(N, p.head_dim - d0), 1.0f, qt(t) + d0 * br + x0,
                        br);
      for (int64_t r = 0; r < N; ++r) row_of[r] = dos(t) + (x0 + r) * Dv;
      for (int64_t e0 = 0; e0 < p.value_dim; e0 += N)
        pack_transposed(row_of, N, e0, std::min(N, p.value_dim - e0), 1.0f, dot(t) + e0 * br + x0,
                        br);
    }
  }

  // dq of tile t's rows: scale · dQᵀ, transposed, a vector of rows at a time staged in buf
  // (N rows of D floats).
  void store_dq(const BackwardProblem& bp, int64_t t, float* buf) {
    Scope scope(profile::kBwdFinish);
    const Problem& p = bp.fwd;
    const int64_t N = lanes(), n_rows = std::min(br, rows - t * br);
    float factor[kMaxLanes];
    float* staged[kMaxLanes];
    std::fill_n(factor, N, p.scale);
    for (int64_t r = 0; r < N; ++r) staged[r] = buf + r * D;
    for (int64_t x0 = 0; x0 < n_rows; x0 += N) {
      const int64_t n = std::min(N, n_rows - x0);
      if (few) {
        for (int64_t r = 0; r < n; ++r)
          for (int64_t d = 0; d < p.head_dim; ++d) staged[r][d] = p.scale * dqt(t)[(x0 + r) * D + d];
      } else {
        for (int64_t d0 = 0; d0 < p.head_dim; d0 += N)
          unpack_transposed(dqt(t) + d0 * br + x0, br, factor, n, staged, d0,
                            std::min(N, p.head_dim - d0));
      }
      for (int64_t r = 0; r < n; ++r) {
        const int64_t x = t * br + x0 + r;
        store_row(staged[r], bp.dq, b, row_h[x], p.sequences[b].q_start + row_i[x], p.head_dim);
      }
    }
  }
};

// One block of keys [c0, c0 + nk) of a kv head: K and V as f32 rows (in place when they are),
// whether they hold only finite values, and (keys pass) the block's dK and dV sums.
struct KeyBlock {
  int64_t c0 = 0, nk = 0;
  const float *k = nullptr, *v = nullptr;
  int64_t ldk = 0, ldv = 0;
  bool finite = true;
  float *dk = nullptr, *dv = nullptr;  // [nk][D'], [nk][Dv']

  // Its keys [lo, hi), on the same storage (D' and Dv': the padded head and value dims).
  KeyBlock part(int64_t lo, int64_t hi, int64_t D, int64_t Dv) const {
    const int64_t skip = lo - c0;
    KeyBlock kb = *this;
    kb.c0 = lo, kb.nk = hi - lo;
    kb.k += skip * ldk, kb.v += skip * ldv;
    if (dk) kb.dk += skip * D, kb.dv += skip * Dv;
    return kb;
  }
};

// Where a key block converts K and V to f32 rows (when they are not) and sums dK and dV.
struct BlockBuffers {
  float *k, *v, *dk, *dv;  // [kKeyBlock][D'], [kKeyBlock][Dv'] each
};

// A thread's scratch for one tile pair, sized for br rows and a block of keys.
struct PairScratch {
  float *st, *dpt, *slope, *mask_t, *lo, *hi, *row_buf, *kbuf, *vbuf, *dk, *dv, *sums;

  void carve(core::Carver& c, const Problem& p, int64_t br) {
    const int64_t K = kKeyBlock, D = padded(p.head_dim), Dv = padded(p.value_dim);
    st = c.take<float>(K * br), dpt = c.take<float>(K * br), slope = c.take<float>(K * br);
    mask_t = c.take<float>(K * br), lo = c.take<float>(br), hi = c.take<float>(br);
    row_buf = c.take<float>(std::max({K, D, Dv})), kbuf = c.take<float>(K * D);
    vbuf = c.take<float>(K * Dv), dk = c.take<float>(K * D), dv = c.take<float>(K * Dv);
    sums = c.take<float>(8 * lanes());
  }
  BlockBuffers block_buffers() const { return {kbuf, vbuf, dk, dv}; }
  static PairScratch for_this_thread(const Problem& p, int64_t br) {
    PairScratch s;
    core::Carver measure(nullptr);
    s.carve(measure, p, br);
    core::Carver carver(core::ScratchArena::for_this_thread().bytes(measure.used()));
    s.carve(carver, p, br);
    return s;
  }
};

KeyBlock load_block(const Problem& p, const RowTiles& rt, int64_t c0, const BlockBuffers& s,
                    bool with_sums) {
  const int64_t b = rt.b, hk = rt.hk;
  KeyBlock kb;
  kb.c0 = c0, kb.nk = std::min(kKeyBlock, p.sequences[b].kv_len - c0);
  // The few-rows layout loads their rows as vectors; the others only broadcast from them.
  const int64_t l0 = p.sequences[b].kv_start + c0;
  const Rows k = operand_rows(p.k, b, hk, l0, p.head_dim, kb.nk, s.k, rt.few);
  const Rows v = operand_rows(p.v, b, hk, l0, p.value_dim, kb.nk, s.v, rt.few);
  kb.k = k.data, kb.ldk = k.ld, kb.v = v.data, kb.ldv = v.ld;
  kb.finite = all_finite(kb.k, kb.ldk, kb.nk, p.head_dim) &&
              all_finite(kb.v, kb.ldv, kb.nk, p.value_dim);
  if (with_sums) {
    kb.dk = s.dk, kb.dv = s.dv;
    std::fill(kb.dk, kb.dk + kb.nk * padded(p.head_dim), 0.0f);
    std::fill(kb.dv, kb.dv + kb.nk * padded(p.value_dim), 0.0f);
  }
  return kb;
}

void store_block(const BackwardProblem& bp, int64_t b, int64_t hk, const KeyBlock& kb) {
  Scope scope(profile::kBwdFinish);
  const Problem& p = bp.fwd;
  const int64_t start = p.sequences[b].kv_start + kb.c0;
  for (int64_t c = 0; c < kb.nk; ++c) {
    store_row(kb.dk + c * padded(p.head_dim), bp.dk, b, hk, start + c, p.head_dim);
    store_row(kb.dv + c * padded(p.value_dim), bp.dv, b, hk, start + c, p.value_dim);
  }
}

// Keys past kv_len exist in the tensor but nobody sees them: their gradients are 0.
void zero_unseen_keys(const BackwardProblem& bp, int64_t b, int64_t hk, float* zeros) {
  const Problem& p = bp.fwd;
  const core::Sequence& seq = p.sequences[b];
  std::fill(zeros, zeros + std::max(p.head_dim, p.value_dim), 0.0f);
  for (int64_t j = seq.kv_len; j < seq.kv_rows; ++j) {
    store_row(zeros, bp.dk, b, hk, seq.kv_start + j, p.head_dim);
    store_row(zeros, bp.dv, b, hk, seq.kv_start + j, p.value_dim);
  }
}

// Out[j][·] += Σ_i A(j, i)·B[i][·] over `vecs` vectors of B's rows, four at a time.
template <ALayout kA, Skip kSkip>
void add_products(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t ncols,
                  int64_t depth, float* out, int64_t ldo, int64_t vecs) {
  const int64_t N = lanes();
  for (int64_t v0 = 0; v0 < vecs; v0 += kTileRowVecs) {
    const float* bv = b + v0 * N;
    float* ov = out + v0 * N;
    switch (std::min<int64_t>(kTileRowVecs, vecs - v0)) {
      case 4: broadcast_tile<4, kA, kSkip>(a, lda, bv, ldb, ncols, depth, ov, ldo); break;
      case 3: broadcast_tile<3, kA, kSkip>(a, lda, bv, ldb, ncols, depth, ov, ldo); break;
      case 2: broadcast_tile<2, kA, kSkip>(a, lda, bv, ldb, ncols, depth, ov, ldo); break;
      default: broadcast_tile<1, kA, kSkip>(a, lda, bv, ldb, ncols, depth, ov, ldo); break;
    }
  }
}

// Calls fn(integral_constant<int, V>(), v0) for a tile's kVecs row vectors in slices of at most
// kTileRowVecs from vector v0: the products with the rows in the lanes keep that many in
// registers, however many the tile has.
template <int kVecs, int kFrom = 0, class Fn>
HWY_INLINE void by_register_rows(const Fn& fn) {
  if constexpr (kFrom < kVecs) {
    constexpr int kCount = std::min(kTileRowVecs, kVecs - kFrom);
    fn(std::integral_constant<int, kCount>(), kFrom);
    by_register_rows<kVecs, kFrom + kCount>(fn);
  }
}

// Outᵀ[c][r] = Σ_d X[r][d]·Y[c][d] for the rows r < rows (at most 8) of a few-rows tile (X
// = scaled Q and Y = K for the scores, X = dout and Y = V for dP), with the head dimension in
// the lanes, N keys at a time; the rows of X and Y are ld whole vectors.
void few_rows_products(const float* x, int64_t ld, int64_t rows, int64_t br, const float* y,
                       int64_t ldy, int64_t nk, float* sums, float* out) {
  const int64_t N = lanes();
  for (int64_t c0 = 0; c0 < nk; c0 += N) {
    const int64_t n = std::min(N, nk - c0);
    const float* yc = y + c0 * ldy;
    if (rows <= 1) qk_block<1>(x, ld, ld / N, yc, ldy, n, sums, N);
    else if (rows <= 2) qk_block<2>(x, ld, ld / N, yc, ldy, n, sums, N);
    else if (rows <= 4) qk_block<4>(x, ld, ld / N, yc, ldy, n, sums, N);
    else qk_block<8>(x, ld, ld / N, yc, ldy, n, sums, N);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < n; ++c) out[(c0 + c) * br + r] = sums[r * N + c];
  }
}

// s -> cap·tanh(s / cap), and slope = d cap·tanh(s / cap) / ds = 1 - tanh², computed as
// 4u / (1 + u)² with u = e^(-2|x|): no cancellation where tanh saturates.
void softcap_with_slope(float* st, float* slope, int64_t n, float cap) {
  const DF df;
  const VF c = hn::Set(df, cap), inv = hn::Set(df, 1.0f / cap), one = hn::Set(df, 1.0f);
  for (int64_t i = 0; i < n; i += lanes()) {
    const VF x = hn::Mul(hn::Load(df, st + i), inv);
    const VF u = VectorExp(df, hn::Mul(hn::Abs(x), hn::Set(df, -2.0f)));
    const VF one_u = hn::Add(one, u);
    hn::Store(hn::Div(hn::Mul(hn::Set(df, 4.0f), u), hn::Mul(one_u, one_u)), df, slope + i);
    hn::Store(hn::Mul(c, hn::Tanh(df, x)), df, st + i);
  }
}

// From the scores z (Sᵀ, masked) and dPᵀ of a tile: Sᵀ becomes p = e^(z - lse) and dPᵀ becomes
// ds = p·(dp - delta)·slope, 0 for keys a row does not see (z = -inf) whatever dp is. dz, the
// gradient of the mask-added score p·(dp - delta), goes to dz_out when asked for.
// A probability is at most 1, but the recomputed score and the forward's lse each carry an f32
// rounding of |z|·2^-24 (and their key sums differ in order), so e^(z - lse) can exceed it: by
// a factor e^(1e23) for scores near 1e30. Capping it keeps gradients finite; NaN stays.
template <int kVecs>
void probabilities_and_gradients(float* st, float* dpt, const float* slope, const float* base,
                                 const float* delta, int64_t br, int64_t nk, float* dz_out) {
  const DF df;
  const int64_t N = lanes();
  const VF neg_inf = hn::Set(df, -__builtin_inff()), one = hn::Set(df, 1.0f);
  VF b[kVecs], d[kVecs];
  for (int v = 0; v < kVecs; ++v) b[v] = hn::Load(df, base + v * N), d[v] = hn::Load(df, delta + v * N);
  for (int64_t c = 0; c < nk; ++c)
    for (int v = 0; v < kVecs; ++v) {
      const int64_t at = c * br + v * N;
      const VF z = hn::Load(df, st + at);
      VF prob = VectorExp(df, hn::Sub(z, b[v]));
      prob = hn::IfThenElse(hn::Gt(prob, one), one, prob);
      const auto seen = hn::Ne(z, neg_inf);
      const VF g = hn::Mul(prob, hn::Sub(hn::Load(df, dpt + at), d[v]));
      const VF dz = hn::IfThenElseZero(seen, g);
      hn::Store(prob, df, st + at);
      // The slope comes from the unmasked score, NaN for a NaN key no row sees: zeroed after it.
      hn::Store(slope ? hn::IfThenElseZero(seen, hn::Mul(g, hn::Load(df, slope + at))) : dz, df,
                dpt + at);
      if (dz_out) hn::Store(dz, df, dz_out + at);
    }
}

// What to compute for a tile pair: the block's dK and dV sums, the tile's dQᵀ, the mask
// gradient (dz added into dmask, a dense array of the mask's shape).
struct Want {
  bool keys = false, queries = false;
  float* dmask = nullptr;
};

// Everything tile t of `rt` contributes with key block kb (see the file comment).
template <int kVecs>
void tile_pair(const BackwardProblem& bp, RowTiles& rt, int64_t t, const KeyBlock& block,
               const PairScratch& s, const Want& want) {
  const Problem& p = bp.fwd;
  const RowTiles::Tile& info = rt.tile[t];
  // Only the block's keys that some row of the tile sees: the others would add exact zeros
  // (half a block on a causal diagonal).
  const int64_t lo = std::max(block.c0, info.some.lo);
  const int64_t hi = std::min(block.c0 + block.nk, info.some.hi);
  if (lo >= hi) return;
  const KeyBlock kb = block.part(lo, hi, rt.D, rt.Dv);
  const int64_t c0 = kb.c0, c1 = c0 + kb.nk, nk = kb.nk, br = rt.br;
  const bool boundary = p.mask.present() || c0 < info.every.lo || c1 > info.every.hi;
  const int64_t D = rt.D, Dv = rt.Dv, N = lanes();
  const int64_t rows = std::min(br, rt.rows - t * br);  // the rest of the tile is padding

  std::optional<Scope> scope(std::in_place, profile::kBwdScores);
  if (rt.few) few_rows_products(rt.qs(t), D, rows, br, kb.k, kb.ldk, nk, s.sums, s.st);
  else by_register_rows<kVecs>([&](auto vecs, int64_t v0) {
    qk_tile<vecs()>(rt.qt(t) + v0 * N, br, kb.k, kb.ldk, nk, p.head_dim, s.st + v0 * N);
  });
  const bool capped = p.softcap > 0;
  if (capped) softcap_with_slope(s.st, s.slope, nk * br, p.softcap);
  const bool dmask = want.dmask && p.mask.present();
  if (boundary) {
    relative_ranges(&rt.range[t * br], br, br, c0, nk, s.lo, s.hi);  // padding: empty ranges
    range_mask_tile<kVecs>(s.st, br, nk, s.lo, s.hi);
    if (p.mask.present()) {
      gather_mask_tile(p.mask, rt.b, &rt.row_h[t * br], &rt.row_i[t * br], rows, br, c0, nk,
                       s.mask_t, s.row_buf);
      const DF df;
      for (int64_t i = 0; i < nk * br; i += N)
        hn::Store(apply_mask(df, hn::Load(df, s.st + i), hn::Load(df, s.mask_t + i)), df, s.st + i);
    }
  }
  if (rt.few) few_rows_products(rt.dos(t), Dv, rows, br, kb.v, kb.ldv, nk, s.sums, s.dpt);
  else by_register_rows<kVecs>([&](auto vecs, int64_t v0) {
    qk_tile<vecs()>(rt.dot(t) + v0 * N, br, kb.v, kb.ldv, nk, p.value_dim, s.dpt + v0 * N);
  });
  scope.emplace(profile::kBwdGradients);
  probabilities_and_gradients<kVecs>(s.st, s.dpt, capped ? s.slope : nullptr, rt.base(t),
                                     rt.delta(t), br, nk, dmask ? s.mask_t : nullptr);
  if (dmask) {
    const Operand& dm = bp.dmask_dense;
    for (int64_t x = 0; x < br; ++x) {
      const int64_t r = t * br + x;
      if (rt.range[r].empty()) continue;
      float* row = want.dmask + dm.offset(rt.b, rt.row_h[r], rt.row_i[r], c0);
      for (int64_t c = 0; c < nk; ++c) row[c * dm.stride[3]] += s.mask_t[c * br + x];
    }
  }
  // Unseen keys have p = ds = 0; where a tile's rows or the block's keys hold Inf or NaN,
  // the zero terms are skipped rather than multiplied.
  // The padding rows' terms are zero: the sums over rows stop at the tile's last real row.
  scope.emplace(profile::kBwdKeyGrads);
  if (want.keys) {
    if (boundary && !info.finite) {
      add_products<kByColumn, Skip::kZeroA>(s.st, br, rt.dos(t), Dv, nk, rows, kb.dv, Dv, Dv / N);
      add_products<kByColumn, Skip::kZeroA>(s.dpt, br, rt.qs(t), D, nk, rows, kb.dk, D, D / N);
    } else {
      add_products<kByColumn, Skip::kNone>(s.st, br, rt.dos(t), Dv, nk, rows, kb.dv, Dv, Dv / N);
      add_products<kByColumn, Skip::kNone>(s.dpt, br, rt.qs(t), D, nk, rows, kb.dk, D, D / N);
    }
  }
  scope.emplace(profile::kBwdQueryGrads);
  if (want.queries && rt.few) {  // dQ[r][·] += Σ_c dSᵀ[c][r]·K[c][·]
    if (boundary && !kb.finite)
      add_products<kByDepth, Skip::kZeroA>(s.dpt, br, kb.k, kb.ldk, rows, nk, rt.dqt(t), D, D / N);
    else
      add_products<kByDepth, Skip::kNone>(s.dpt, br, kb.k, kb.ldk, rows, nk, rt.dqt(t), D, D / N);
  } else if (want.queries) {
    by_register_rows<kVecs>([&](auto vecs, int64_t v0) {
      float* dqt = rt.dqt(t) + v0 * N;
      if (boundary && !kb.finite)
        broadcast_tile<vecs(), kByDepth, Skip::kZeroB>(kb.k, kb.ldk, s.dpt + v0 * N, br,
                                                       p.head_dim, nk, dqt, br);
      else
        broadcast_tile<vecs(), kByDepth>(kb.k, kb.ldk, s.dpt + v0 * N, br, p.head_dim, nk, dqt, br);
    });
  }
}

// Tile t's pair with block kb, over as many row vectors as the tile has rows: a head's last
// tile may be part padding (whisper-prefill's 224 rows: 64, 64, 64 and 32), whose products
// would add only zeros. Lanes do not mix, so the real rows get the same bits either way.
void pair(const BackwardProblem& bp, RowTiles& rt, int64_t t, const KeyBlock& kb,
          const PairScratch& s, const Want& want) {
  const int64_t rows = std::min(rt.br, rt.rows - t * rt.br);
  switch ((rows + lanes() - 1) / lanes()) {
    case 1: return tile_pair<1>(bp, rt, t, kb, s, want);
    case 2: return tile_pair<2>(bp, rt, t, kb, s, want);
    case 3: return tile_pair<3>(bp, rt, t, kb, s, want);
    case 4: return tile_pair<4>(bp, rt, t, kb, s, want);
    case 5: return tile_pair<5>(bp, rt, t, kb, s, want);
    case 6: return tile_pair<6>(bp, rt, t, kb, s, want);
    case 7: return tile_pair<7>(bp, rt, t, kb, s, want);
    default: return tile_pair<8>(bp, rt, t, kb, s, want);
  }
}

// Whether a head's tiles go outside its key blocks: when its keys (K, V, and their gradient
// sums in f32) take less room than its packed query rows and a quarter of L2 at most, so that
// they stay in cache while each tile, packed as it comes, runs over all of them. The other order
// re-reads every packed tile once per key block: for sd-unet-xattn (4096 rows, 77 keys) 4 MB a
// head, from beyond L2, twice.
bool tiles_outside(const Problem& p, int64_t b) {
  const int64_t D = padded(p.head_dim), Dv = padded(p.value_dim);
  const int64_t rows = p.sequences[b].q_rows * p.group_size();
  const int64_t key_bytes = p.sequences[b].kv_len * 2 * (D + Dv) * int64_t{sizeof(float)};
  const int64_t row_bytes = rows * (3 * D + 2 * Dv + 2) * int64_t{sizeof(float)};
  return key_bytes < row_bytes && 4 * key_bytes <= core::cpu_profile().l2_bytes;
}

// Every key block of a head, loaded once with buffers of its own (tiles outside).
struct HeadKeys {
  std::vector<KeyBlock> blocks;
  hwy::AlignedFreeUniquePtr<float[]> data;
  int64_t capacity = 0;

  void load(const Problem& p, const RowTiles& rt) {
    const int64_t n = (p.sequences[rt.b].kv_len + kKeyBlock - 1) / kKeyBlock;
    const int64_t block_floats = 2 * kKeyBlock * (rt.D + rt.Dv);
    if (n * block_floats > capacity)
      capacity = n * block_floats, data = hwy::AllocateAligned<float>(capacity);
    blocks.clear();
    for (int64_t j = 0; j < n; ++j) {
      float* k = data.get() + j * block_floats;
      float* v = k + kKeyBlock * rt.D;
      float* dk = v + kKeyBlock * rt.Dv;
      blocks.push_back(load_block(p, rt, j * kKeyBlock, {k, v, dk, dk + kKeyBlock * rt.D}, true));
    }
  }
};

// Every gradient of one (sequence, kv head), on one thread, in either loop order (see the file
// comment): the same pairs, the same bits.
void head(const BackwardProblem& bp, int64_t b, int64_t hk, float* dmask) {
  const Problem& p = bp.fwd;
  thread_local RowTiles rt;  // reused across items and calls
  const bool by_tile = tiles_outside(p, b);
  rt.plan(p, b, hk, by_tile);
  const PairScratch s = PairScratch::for_this_thread(p, rt.br);
  const Want want{true, true, dmask};
  if (by_tile) {
    thread_local HeadKeys keys;
    keys.load(p, rt);
    for (int64_t t = 0; t < rt.tiles; ++t) {
      rt.pack_tile(bp, t);
      for (const KeyBlock& kb : keys.blocks) pair(bp, rt, t, kb, s, want);
      rt.store_dq(bp, t, s.kbuf);
    }
    for (const KeyBlock& kb : keys.blocks) store_block(bp, b, hk, kb);
  } else {
    for (int64_t t = 0; t < rt.tiles; ++t) rt.pack_tile(bp, t);
    for (int64_t c0 = 0; c0 < p.sequences[b].kv_len; c0 += kKeyBlock) {
      const KeyBlock kb = load_block(p, rt, c0, s.block_buffers(), true);
      for (int64_t t = 0; t < rt.tiles; ++t) pair(bp, rt, t, kb, s, want);
      store_block(bp, b, hk, kb);
    }
    for (int64_t t = 0; t < rt.tiles; ++t) rt.store_dq(bp, t, s.kbuf);
  }
  zero_unseen_keys(bp, b, hk, s.row_buf);
}

}  // namespace

void Backward(const BackwardProblem& bp) {
  const Problem& p = bp.fwd;
  const int threads = core::resolve_threads(p.num_threads);

  // The mask gradient. When no two rows share a mask row, every element has one writer (the
  // item owning the row); when the mask broadcasts over b, h or i, each thread sums into its own
  // copy, items go to threads in a fixed order, and the copies are added in thread order.
  const bool dmask = bp.dmask_view.present(), shared = dmask && bp.dmask_shared;
  const int copies = shared ? threads : 1;
  std::vector<float> acc(dmask ? copies * bp.dmask_size : 0, 0.0f);
  auto dmask_of = [&](int t) { return dmask ? acc.data() + (shared ? t : 0) * bp.dmask_size : nullptr; };
  const int64_t heads = p.batch * p.heads_kv;

  // Enough kv heads to keep the threads busy: one per thread at a time.
  if (heads >= threads) {
    auto item = [&](int64_t n, int t) { head(bp, n / p.heads_kv, n % p.heads_kv, dmask_of(t)); };
    if (shared) core::parallel_for_static(heads, threads, item);
    else core::parallel_for(heads, threads, [&](int64_t n) { item(n, 0); });
    if (dmask) store_dense(acc, copies, bp.dmask_size, bp.dmask_view);
    return;
  }
  // Otherwise the same pairs in two passes that split the heads further: per key block (dK,
  // dV), then per tile (dQ and the mask gradient).
  std::vector<RowTiles> all(heads);
  core::parallel_for(heads, threads,
                     [&](int64_t n) { all[n].pack(bp, n / p.heads_kv, n % p.heads_kv); });
  struct Item {
    int64_t head, index;
  };
  std::vector<Item> blocks, tiles;
  for (int64_t n = 0; n < heads; ++n) {
    for (int64_t c0 = 0; c0 < p.sequences[n / p.heads_kv].kv_len; c0 += kKeyBlock)
      blocks.push_back({n, c0});
    for (int64_t t = 0; t < all[n].tiles; ++t) tiles.push_back({n, t});
  }
  core::parallel_for(static_cast<int64_t>(blocks.size()), threads, [&](int64_t i) {
    RowTiles& rt = all[blocks[i].head];
    const PairScratch s = PairScratch::for_this_thread(p, rt.br);
    const KeyBlock kb = load_block(p, rt, blocks[i].index, s.block_buffers(), true);
    for (int64_t t = 0; t < rt.tiles; ++t) pair(bp, rt, t, kb, s, {true, false, nullptr});
    store_block(bp, rt.b, rt.hk, kb);
  });
  auto tile_item = [&](int64_t i, int thread) {
    RowTiles& rt = all[tiles[i].head];
    const int64_t t = tiles[i].index;
    const PairScratch s = PairScratch::for_this_thread(p, rt.br);
    for (int64_t c0 = 0; c0 < p.sequences[rt.b].kv_len; c0 += kKeyBlock) {
      const KeyBlock kb = load_block(p, rt, c0, s.block_buffers(), false);
      pair(bp, rt, t, kb, s, {false, true, dmask_of(thread)});
    }
    rt.store_dq(bp, t, s.kbuf);
  };
  if (shared) core::parallel_for_static(static_cast<int64_t>(tiles.size()), threads, tile_item);
  else core::parallel_for(static_cast<int64_t>(tiles.size()), threads, [&](int64_t i) { tile_item(i, 0); });
  // Per head, not per tile: a head without query rows has no tiles, and its keys still need it.
  std::vector<float> zeros(std::max(p.head_dim, p.value_dim));
  for (int64_t n = 0; n < heads; ++n) zero_unseen_keys(bp, all[n].b, all[n].hk, zeros.data());
  if (dmask) store_dense(acc, copies, bp.dmask_size, bp.dmask_view);
}

std::string BackwardTiles() {
  return "backward up to " + std::to_string(kBwdTileVecs * lanes()) + " query rows x " +
         std::to_string(kKeyBlock) + " keys per tile pair (each tile over all key blocks when a " +
         "head's keys take less room than its rows and at most " +
         std::to_string(core::cpu_profile().l2_bytes / 4 >> 10) + " KiB, a quarter of L2)";
}

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace xattn::kernels {

HWY_EXPORT(Backward);
HWY_EXPORT(BackwardTiles);

void run_backward(const core::BackwardProblem& p) { HWY_DYNAMIC_DISPATCH(Backward)(p); }
std::string dispatched_backward_tiles() { return HWY_DYNAMIC_DISPATCH(BackwardTiles)(); }

}  // namespace xattn::kernels
#endif
