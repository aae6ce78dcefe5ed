// The backward's operands in tiles: a (sequence, kv head)'s query rows packed in tiles of rows
// (RowTiles), its keys in blocks (KeyBlock) with their dK and dV sums, and a thread's scratch for
// one tile pair (PairScratch). backward.cc runs the pairs.

#if defined(XATTN_KERNELS_BACKWARD_TILES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef XATTN_KERNELS_BACKWARD_TILES_INL_H_
#undef XATTN_KERNELS_BACKWARD_TILES_INL_H_
#else
#define XATTN_KERNELS_BACKWARD_TILES_INL_H_
#endif

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/convert.h"
#include "core/problem.h"
#include "core/profile.h"
#include "core/scratch.h"
#include "core/visibility.h"
#include "hwy/aligned_allocator.h"
#include "hwy/highway.h"
#include "kernels/tile_kernels-inl.h"
#include "kernels/transpose-inl.h"
#include "kernels/work_item-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Keys per block. Each tile pair re-reads its tile's packed rows (80 KB at D = 64) for the
// block's products, so larger blocks re-read them less often: 128 keys took 0.94-0.96x the time
// of 64 on self-2k-d64 and perceiver-encode (one thread, an Intel Xeon); 96 and 192 were slower.
inline constexpr int64_t kKeyBlock = 128;

// Row vectors per tile: 64 rows with 32 registers, as many with 16 (8 vectors of 8). The rows
// are the depth of the dK and dV products, which load and store the block's sums once per tile
// pair, so deeper tiles move them less; the products with the rows in the lanes take them
// kTileRowVecs at a time (by_register_rows). On a Zen 3 (AVX2), tiles of 8 vectors took
// 0.92-0.96x the backward's time of tiles of 2 (kTileRowVecs) at one thread, 0.85-0.93x at two.
inline constexpr int kBwdTileVecs = kVectorRegisters == 32 ? 4 : 8;

inline float lse_of(const core::Problem& p, int64_t b, int64_t h, int64_t i) {
  return static_cast<const float*>(p.lse.data)[p.lse.offset(b, h, p.sequences[b].q_start + i, 0)];
}

inline void store_row(const float* src, const core::Operand& t, int64_t b, int64_t h, int64_t l,
                      int64_t width) {
  void* data = const_cast<void*>(t.data);
  core::store_row(src, width, core::element_ptr(data, t.dtype, t.offset(b, h, l, 0)), t.dtype,
                  t.stride[3]);
}

// delta = dout·out of a row, in double: each product is exact in it, so delta is as exact as
// out allows. A vector of sums (a fixed order for each SIMD target), not one chain of dependent
// adds, which cost as much as packing the row.
inline float row_delta(const float* out, const float* dout, int64_t n) {
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

// Row l of t times `scale` into dst as whole vectors, zeros past width; f32 rows in one pass
// (a copy, then vector loads of what its last stores wrote, made store forwarding fail).
inline void padded_row(const core::Operand& t, int64_t b, int64_t h, int64_t l, int64_t width,
                       float scale, float* dst) {
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
  std::vector<core::KeyRange> range;        // [tiles·br]
  struct Tile {
    core::KeyRange every, some;  // keys every row sees; the span of keys some row sees
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
  void plan(const core::Problem& p, int64_t b_, int64_t hk_, bool one_at_a_time) {
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
    range.assign(tiles * br, core::KeyRange{});
    tile.assign(tiles, Tile{});
    out_row.resize(Dv);
  }

  // Every tile, up front.
  void pack(const core::BackwardProblem& bp, int64_t b_, int64_t hk_) {
    plan(bp.fwd, b_, hk_, false);
    for (int64_t t = 0; t < tiles; ++t) pack_tile(bp, t);
  }

  // Tile t's rows into its slot, and what they see into tile[t] and range.
  void pack_tile(const core::BackwardProblem& bp, int64_t t) {
    core::profile::Scope scope(core::profile::kBwdPack);
    const core::Problem& p = bp.fwd;
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
      core::KeyRange seen;
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
  void store_dq(const core::BackwardProblem& bp, int64_t t, float* buf) {
    core::profile::Scope scope(core::profile::kBwdFinish);
    const core::Problem& p = bp.fwd;
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

  void carve(core::Carver& c, const core::Problem& p, int64_t br) {
    const int64_t K = kKeyBlock, D = padded(p.head_dim), Dv = padded(p.value_dim);
    st = c.take<float>(K * br), dpt = c.take<float>(K * br), slope = c.take<float>(K * br);
    mask_t = c.take<float>(K * br), lo = c.take<float>(br), hi = c.take<float>(br);
    row_buf = c.take<float>(std::max({K, D, Dv})), kbuf = c.take<float>(K * D);
    vbuf = c.take<float>(K * Dv), dk = c.take<float>(K * D), dv = c.take<float>(K * Dv);
    sums = c.take<float>(8 * lanes());
  }
  BlockBuffers block_buffers() const { return {kbuf, vbuf, dk, dv}; }
  static PairScratch for_this_thread(const core::Problem& p, int64_t br) {
    PairScratch s;
    core::Carver measure(nullptr);
    s.carve(measure, p, br);
    core::Carver carver(core::ScratchArena::for_this_thread().bytes(measure.used()));
    s.carve(carver, p, br);
    return s;
  }
};

inline KeyBlock load_block(const core::Problem& p, const RowTiles& rt, int64_t c0,
                           const BlockBuffers& s, bool with_sums) {
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

inline void store_block(const core::BackwardProblem& bp, int64_t b, int64_t hk,
                        const KeyBlock& kb) {
  core::profile::Scope scope(core::profile::kBwdFinish);
  const core::Problem& p = bp.fwd;
  const int64_t start = p.sequences[b].kv_start + kb.c0;
  for (int64_t c = 0; c < kb.nk; ++c) {
    store_row(kb.dk + c * padded(p.head_dim), bp.dk, b, hk, start + c, p.head_dim);
    store_row(kb.dv + c * padded(p.value_dim), bp.dv, b, hk, start + c, p.value_dim);
  }
}

// Keys past kv_len exist in the tensor but nobody sees them: their gradients are 0.
inline void zero_unseen_keys(const core::BackwardProblem& bp, int64_t b, int64_t hk,
                             float* zeros) {
  const core::Problem& p = bp.fwd;
  const core::Sequence& seq = p.sequences[b];
  std::fill(zeros, zeros + std::max(p.head_dim, p.value_dim), 0.0f);
  for (int64_t j = seq.kv_len; j < seq.kv_rows; ++j) {
    store_row(zeros, bp.dk, b, hk, seq.kv_start + j, p.head_dim);
    store_row(zeros, bp.dv, b, hk, seq.kv_start + j, p.value_dim);
  }
}

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // XATTN_KERNELS_BACKWARD_TILES_INL_H_
