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
// The tiles, the key blocks and the scratch are in backward_tiles-inl.h; this file runs the pairs.

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
#include "hwy/aligned_allocator.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kernels/backward.h"
#include "kernels/backward_tiles-inl.h"
#include "kernels/convert-inl.h"
#include "kernels/dim_lanes-inl.h"
#include "kernels/score_tile-inl.h"
#include "kernels/tile_kernels-inl.h"
#include "kernels/vector_exp-inl.h"
#include "kernels/work_item-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace {

using core::BackwardProblem;
using core::Operand;
using core::Problem;
using core::profile::Scope;
namespace profile = core::profile;
constexpr ALayout kByColumn = ALayout::kByColumn, kByDepth = ALayout::kByDepth;

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
