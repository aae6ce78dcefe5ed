// The tiled, single-pass forward (FlashAttention-2 style), compiled once per SIMD target.
//
//   for each work item (sequence, kv head, block of query rows of all G heads in the group;
//   where K and V outgrow L2, a run of a head's items over chunks of keys, run_items):
//     for each key tile the rows can see (for_each_tile):
//       S = Q·Kᵀ → softcap → masks (boundary tiles only) → online softmax → acc += P·V
//     finalize: out = acc / l, lse = m + log l   (or store the partial state of a key split)
//
// How the tiles are laid out in registers is a policy: RowLanes (row_lanes-inl.h) puts query
// rows in the vector lanes, for items with many rows; DimLanes (dim_lanes-inl.h) puts the head
// dimension there, for the few rows of a decoder step. with_tiles picks one per item.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/forward.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "core/convert.h"
#include "core/cpu_profile.h"
#include "core/parallel.h"
#include "core/partition.h"
#include "core/profile.h"
#include "core/scratch.h"
#include "core/softmax_state.h"
#include "core/visibility.h"
#include "hwy/highway.h"
#include "kernels/convert-inl.h"
#include "kernels/forward.h"
#include "kernels/dim_lanes-inl.h"
#include "kernels/row_lanes-inl.h"
#include "kernels/vector_exp-inl.h"
#include "kernels/work_item-inl.h"

HWY_BEFORE_NAMESPACE();
namespace xattn::kernels::HWY_NAMESPACE {
namespace {

using core::Operand;
using core::Problem;
using core::WorkItem;
using core::profile::Scope;
namespace profile = core::profile;

// Query rows per work item, in vectors: a register block of the micro-kernels (see
// kTileRowVecs). Items of twice the rows, for twice the rows per pass over K and V
// where those outgrow L2, are no longer faster now that such items run together over chunks of
// keys (run_items): perceiver-encode took 0.95x the time without them on an Intel Xeon.
constexpr int kRowVecs = kTileRowVecs;

// One key's row of K and of V, in bytes.
int64_t bytes_per_key(const Problem& p) {
  return (p.head_dim + p.value_dim) * dtype_size(p.k.dtype);
}

// Whether one kv head's K and V outgrow the L2 cache (or the tests and benchmarks say so): then
// the items of a head run together (run_items).
bool keys_beyond_l2(const Problem& p) {
  const core::Forced forced = core::forced_key_chunks();
  if (forced != core::Forced::kAuto) return forced == core::Forced::kOn;
  int64_t keys = 0;
  for (const core::Sequence& s : p.sequences) keys = std::max(keys, s.kv_len);
  return keys * bytes_per_key(p) > core::cpu_profile().l2_bytes;
}

// Whether the decode layout prefetches K and V (RowsAhead): where they outgrow the last-level
// cache, so that every pass over them reads memory (or the tests and benchmarks say so).
bool prefetch_kv(const Problem& p) {
  const core::Forced forced = core::forced_kv_prefetch();
  if (forced != core::Forced::kAuto) return forced == core::Forced::kOn;
  int64_t keys = 0;
  for (const core::Sequence& s : p.sequences) keys += s.kv_len;
  return keys * p.heads_kv * bytes_per_key(p) > core::cpu_profile().llc_bytes;
}

// One tile of keys [c0, c0 + nk) for the rows of s, in the layout `Tiles`.
template <class Tiles>
void tile_step(ItemState& s, int64_t c0, int64_t nk, TileKind kind) {
  {
    Scope scope(profile::kScores);
    Tiles::scores(s, c0, nk, kind);
  }
  {
    Scope scope(profile::kSoftmax);
    Tiles::softmax(s, nk);
  }
  Scope scope(profile::kWeightedSum);
  Tiles::weighted_sum(s, c0, nk, kind);
}

// The online-softmax pass over an item's keys in [k0, k1), in the layout `Tiles`; leaves m, l
// and the accumulator in the item state. k0 - the item's first key is a whole number of key
// tiles, so that the item's keys go in the same tiles however they are cut. Boundary tiles of
// several row vectors go by row vector where no dense mask needs every key of every row.
template <class Tiles>
void accumulate(ItemState& s, int64_t k0, int64_t k1) {
  for_each_tile(s, k0, k1, [&](int64_t c0, int64_t nk, TileKind kind) {
    if constexpr (requires { Tiles::kRowVecs; }) {
      if (Tiles::kRowVecs > 1 && kind == TileKind::kBoundary && !s.p->mask.present())
        return Tiles::by_row_vectors(s, c0, nk, [&](auto tiles, int64_t b0, int64_t bn) {
          tile_step<decltype(tiles)>(s, b0, bn, TileKind::kBoundary);
        });
    }
    tile_step<Tiles>(s, c0, nk, kind);
  });
}

// Slot layout for a key split's partial state: m[rows], l[rows], acc[rows][Dv].
struct PartialStates {
  float* data = nullptr;
  int64_t rows = 0, value_dim = 0;
  float* slot(int64_t i) const { return data + i * rows * (value_dim + 2); }
};

// Each row's final softmax state (m, l), kept when the weights are asked for: their pass
// normalises the recomputed scores as p = e^(s - m) / l. (Not as e^(s - lse): lse = m + log l
// is rounded to f32, and that rounding, |lse|·2^-24, would reach every weight, e.g. 5e-4 of it
// for scores near 1e4; s - m is exact near the maximum.) Indexed [b][h][row], with b stride 0 for
// packed sequences, whose rows are numbered across sequences.
struct RowStats {
  std::vector<float> m, l;
  int64_t stride_b = 0, stride_h = 0;

  explicit RowStats(const Problem& p) {
    if (!p.weights.present()) return;
    int64_t rows = 0;
    bool packed = false;
    for (const core::Sequence& s : p.sequences)
      rows = std::max(rows, s.q_start + s.q_rows), packed |= s.q_start != 0;
    stride_h = rows;
    stride_b = packed ? 0 : p.heads_q * rows;
    m.resize((packed ? 1 : p.batch) * p.heads_q * rows);
    l.resize(m.size());
  }
  int64_t index(int64_t b, int64_t h, int64_t row) const {
    return b * stride_b + h * stride_h + row;
  }
};

// Stores row r's output (in `out`, normalised; nothing to store when it was written in place)
// and its lse, and keeps its state for the weights.
void store_finished_row(const Problem& p, const ItemState& s, int64_t r, core::SoftmaxState st,
                        const float* out, bool in_place, RowStats& stats) {
  const int64_t h = s.row_h[r], i = s.seq->q_start + s.row_i[r];
  if (!stats.m.empty()) {
    const int64_t at = stats.index(s.b, h, i);
    stats.m[at] = st.m, stats.l[at] = st.l;
  }
  if (!in_place)
    core::store_row(out, p.value_dim,
                    core::element_ptr(const_cast<void*>(p.out.data), p.out.dtype,
                                      p.out.offset(s.b, h, i, 0)),
                    p.out.dtype, p.out.stride[3]);
  if (p.lse.present())
    static_cast<float*>(const_cast<void*>(p.lse.data))[p.lse.offset(s.b, h, i, 0)] =
        core::row_lse(st);
}

// Row r's state (m, l) and Σ p·v in acc: merged into what out and lse hold when accumulating,
// then normalised and stored.
void store_result_row(const Problem& p, const ItemState& s, int64_t r, core::SoftmaxState st,
                      const float* acc, float* out_buf, RowStats& stats) {
  const int64_t h = s.row_h[r], i = s.seq->q_start + s.row_i[r];
  if (p.accumulate) {  // fold this row's keys into the result out and lse hold: (m, l) = (lse, 1)
    const float prior = static_cast<const float*>(p.lse.data)[p.lse.offset(s.b, h, i, 0)];
    convert_row(core::element_ptr(p.out.data, p.out.dtype, p.out.offset(s.b, h, i, 0)),
                p.out.dtype, p.out.stride[3], p.value_dim, out_buf);
    core::SoftmaxState total{prior, prior == core::kNegInf ? 0.0f : 1.0f};
    core::merge_into(total, out_buf, st, acc, p.value_dim);
    st = total, acc = out_buf;
  }
  core::finalize_row(st, acc, out_buf, p.value_dim);
  store_finished_row(p, s, r, st, out_buf, false, stats);
}

// The item's state with its queries packed, ready for its keys; `prefetch`: prefetch_kv(p), and
// `next` the item the thread runs after this one, if known.
template <class Tiles>
void start_item(const Problem& p, const WorkItem& w, ItemState& s, core::ScratchArena& arena,
                bool prefetch, const WorkItem* next) {
  Scope scope(profile::kPackQueries);
  setup_item(p, w, Tiles::padded_rows(), s, arena);
  s.prefetch_kv = prefetch;
  if (next)
    s.next = {next->seq, next->kv_head, p.sequences[next->seq].kv_start + next->key_begin,
              next->key_end - next->key_begin};
  Tiles::pack_queries(s);
  Tiles::begin(s);
}

// Stores the item's results (or its partial state, for a key split).
template <class Tiles>
void finish_item(const Problem& p, const WorkItem& w, const ItemState& s,
                 const PartialStates& partials, RowStats& stats) {
  Scope scope(profile::kFinish);
  const int64_t Dv = p.value_dim, N = lanes();
  float factor[kMaxLanes];
  float* rows[kMaxLanes];
  if (w.num_splits > 1) {  // the partial state, unnormalised
    float* slot = partials.slot(w.partial_slot + w.split);
    std::copy_n(s.m, s.rows, slot);
    std::copy_n(s.l, s.rows, slot + partials.rows);
    std::fill_n(factor, N, 1.0f);
    for (int64_t r0 = 0; r0 < s.rows; r0 += N) {
      const int64_t n = std::min(N, s.rows - r0);
      for (int64_t r = 0; r < n; ++r) rows[r] = slot + 2 * partials.rows + (r0 + r) * Dv;
      Tiles::store_acc_rows(s, r0, n, factor, rows);
    }
    return;
  }
  // A vector's worth of rows at a time: normalised straight into f32 outputs, otherwise staged
  // in vbuf (no tile needs it now) and stored from there.
  const bool in_place = !p.accumulate && p.out.dtype == DType::kF32 && p.out.stride[3] == 1;
  float* out = static_cast<float*>(const_cast<void*>(p.out.data));
  for (int64_t r0 = 0; r0 < s.rows; r0 += N) {
    const int64_t n = std::min(N, s.rows - r0);
    std::fill_n(factor, N, 0.0f);
    for (int64_t r = 0; r < n; ++r) {
      const int64_t x = r0 + r;
      factor[r] = p.accumulate ? 1.0f : 1.0f / s.l[x];  // as finalize_row
      rows[r] = in_place ? out + p.out.offset(s.b, s.row_h[x], s.seq->q_start + s.row_i[x], 0)
                         : s.vbuf + r * Dv;
    }
    Tiles::store_acc_rows(s, r0, n, factor, rows);
    for (int64_t r = 0; r < n; ++r) {
      const core::SoftmaxState st{s.m[r0 + r], s.l[r0 + r]};
      if (p.accumulate) {
        store_result_row(p, s, r0 + r, st, rows[r], s.out_buf, stats);
        continue;
      }
      if (st.l == 0.0f) std::fill_n(rows[r], Dv, 0.0f);  // saw no key (its acc · 1/0 is not 0)
      store_finished_row(p, s, r0 + r, st, rows[r], in_place, stats);
    }
  }
}

// Items that run together: the row blocks of one kv head over the same keys, whose K and V
// outgrow L2. Run one after the other, each would stream them from beyond L2; here the keys go
// in chunks that fit in half of it, each through every item before the next chunk
// (perceiver-encode: 0.95x the time on an Intel Xeon; chunks of a quarter of L2 or all of it
// were 1.03-1.05x slower than half). Every row meets the same tiles in the same order as in an
// item alone, so the bits are the same.
constexpr int kMaxItemsPerRun = 8;

int64_t keys_per_chunk(const Problem& p) {
  // Forced on, every tile is a chunk: the most cuts, for the tests.
  if (core::forced_key_chunks() == core::Forced::kOn) return kKeysPerTile;
  const int64_t tiles = core::cpu_profile().l2_bytes / 2 / (bytes_per_key(p) * kKeysPerTile);
  return std::max<int64_t>(tiles, 1) * kKeysPerTile;
}

// `next`: the item the thread runs after these, if known (its first keys are prefetched where
// an item runs alone and prefetches).
template <class Tiles>
void run_items(const Problem& p, const WorkItem* items, int64_t n, const PartialStates& partials,
               RowStats& stats, bool prefetch, const WorkItem* next) {
  // Thread-local, not on the stack: under ASan's detect_stack_use_after_return, locals live on a
  // fake stack that does not keep the 64-byte alignment gcc's vector copies of them assume (a
  // copied WorkItem faulted there).
  // The first item takes the thread's own arena, as an item alone does.
  thread_local core::ScratchArena more_arenas[kMaxItemsPerRun - 1];
  thread_local ItemState states[kMaxItemsPerRun];
  for (int64_t j = 0; j < n; ++j)
    start_item<Tiles>(p, items[j], states[j],
                      j == 0 ? core::ScratchArena::for_this_thread() : more_arenas[j - 1],
                      prefetch, n == 1 ? next : nullptr);
  // Where items have few keys (sd-unet-xattn: 77) packing the queries and storing the outputs
  // waited on memory, though each item computes for microseconds: long enough to fetch them.
  if (next) prefetch_rows(p, p.q, p.head_dim, *next);
  for (int64_t j = 0; j < n; ++j) prefetch_rows(p, p.out, p.value_dim, items[j]);
  const int64_t chunk = n > 1 ? keys_per_chunk(p) : items[0].key_end - items[0].key_begin;
  for (int64_t k0 = items[0].key_begin; k0 < items[0].key_end; k0 += chunk)
    for (int64_t j = 0; j < n; ++j)
      accumulate<Tiles>(states[j], k0, std::min(k0 + chunk, items[j].key_end));
  for (int64_t j = 0; j < n; ++j) finish_item<Tiles>(p, items[j], states[j], partials, stats);
}

// Runs of plan.items to run together (see run_items): begin and count. Only where one kv head's
// K and V exceed L2, and never so few runs that threads would idle.
struct ItemRun {
  int64_t begin, count;
};
std::vector<ItemRun> item_runs(const Problem& p, const core::WorkPlan& plan, int threads) {
  const auto n = static_cast<int64_t>(plan.items.size());
  const int64_t most =
      keys_beyond_l2(p) ? std::clamp<int64_t>(n / (2 * int64_t{threads}), 1, kMaxItemsPerRun) : 1;
  auto together = [](const WorkItem& a, const WorkItem& b) {
    return a.seq == b.seq && a.kv_head == b.kv_head && a.key_begin == b.key_begin &&
           a.key_end == b.key_end && a.num_splits == 1 && b.num_splits == 1 &&
           a.row_end - a.row_begin == b.row_end - b.row_begin;
  };
  std::vector<ItemRun> runs;
  for (int64_t i = 0; i < n; ++i) {
    if (!runs.empty() && runs.back().count < most &&
        together(plan.items[runs.back().begin], plan.items[i]))
      ++runs.back().count;
    else
      runs.push_back({i, 1});
  }
  return runs;
}

// Merges a split row tile's partial states in split order, then stores the results.
void merge_splits(const Problem& p, const WorkItem& w, const PartialStates& partials,
                  RowStats& stats) {
  Scope scope(profile::kFinish);
  ItemState s;
  setup_item(p, w, kRowVecs * lanes(), s);
  const int64_t Dv = p.value_dim;
  for (int64_t r = 0; r < s.rows; ++r) {
    core::SoftmaxState total;
    std::fill(s.row_buf, s.row_buf + Dv, 0.0f);
    for (int32_t k = 0; k < w.num_splits; ++k) {
      const float* slot = partials.slot(w.partial_slot + k);
      const core::SoftmaxState part{slot[r], slot[partials.rows + r]};
      core::merge_into(total, s.row_buf, part, slot + 2 * partials.rows + r * Dv, Dv);
    }
    store_result_row(p, s, r, total, s.row_buf, s.out_buf, stats);
  }
}

// The probabilities output: a second pass that recomputes each score tile and normalises it
// with the row's final state, p = e^(s - m) / l (RowStats). Unseen keys get 0. It uses the
// layout of the first pass, whose scores (summed in the same order) gave m and l.
template <class Tiles>
void weights_item(const Problem& p, const WorkItem& w, const RowStats& stats) {
  ItemState s;
  setup_item(p, w, Tiles::padded_rows(), s);
  Tiles::pack_queries(s);
  const Operand& W = p.weights;
  void* wdata = const_cast<void*>(W.data);
  std::fill(s.row_buf, s.row_buf + kKeysPerTile, 0.0f);
  for (int64_t r = 0; r < s.br; ++r) {
    // Per row: m in alpha, 1/l in l; (0, 0) for padding and for rows that saw nothing (l = 0).
    s.alpha[r] = s.l[r] = 0.0f;
    if (r >= s.rows) continue;
    const int64_t h = s.row_h[r], i = s.seq->q_start + s.row_i[r];
    const int64_t at = stats.index(s.b, h, i);
    if (stats.l[at] != 0.0f) s.alpha[r] = stats.m[at], s.l[r] = 1.0f / stats.l[at];  // NaN stays
    for (int64_t c0 = 0; c0 < p.weights_cols; c0 += kKeysPerTile)
      core::store_row(s.row_buf, std::min(kKeysPerTile, p.weights_cols - c0),
                      core::element_ptr(wdata, W.dtype, W.offset(s.b, h, i, c0)), W.dtype,
                      W.stride[3]);
  }
  for_each_tile(s, w.key_begin, w.key_end, [&](int64_t c0, int64_t nk, TileKind kind) {
    Tiles::scores(s, c0, nk, kind);
    Tiles::normalized_probabilities(s, nk);
    for (int64_t r = 0; r < s.rows; ++r) {
      Tiles::score_row(s, r, nk, s.out_buf);
      const int64_t off = W.offset(s.b, s.row_h[r], s.seq->q_start + s.row_i[r], c0);
      core::store_row(s.out_buf, nk, core::element_ptr(wdata, W.dtype, off), W.dtype, W.stride[3]);
    }
  });
}

// Rows i in [q_len, q_rows) (dense q_lens) see nothing: out = 0, lse = -inf, weights = 0.
void zero_inactive_rows(const Problem& p) {
  if (p.accumulate) return;  // merging nothing into a result leaves it as it is
  std::vector<float> zeros(std::max(p.value_dim, p.weights.present() ? p.weights_cols : 0), 0.0f);
  for (int64_t b = 0; b < p.batch; ++b) {
    const core::Sequence& s = p.sequences[b];
    for (int64_t h = 0; h < p.heads_q; ++h)
      for (int64_t i = s.q_start + s.q_len; i < s.q_start + s.q_rows; ++i) {
        void* out = const_cast<void*>(p.out.data);
        core::store_row(zeros.data(), p.value_dim,
                        core::element_ptr(out, p.out.dtype, p.out.offset(b, h, i, 0)),
                        p.out.dtype, p.out.stride[3]);
        if (p.lse.present())
          static_cast<float*>(const_cast<void*>(p.lse.data))[p.lse.offset(b, h, i, 0)] =
              core::kNegInf;
        if (p.weights.present()) {
          void* w = const_cast<void*>(p.weights.data);
          core::store_row(zeros.data(), p.weights_cols,
                          core::element_ptr(w, p.weights.dtype, p.weights.offset(b, h, i, 0)),
                          p.weights.dtype, p.weights.stride[3]);
        }
      }
  }
}

// Picks the layout for an item: rows in lanes when they fill at least half a vector, else
// head dimensions in lanes, for 1, 2, 4, 6 or 8 rows (6, so that 5 or 6 query heads per kv head
// do not compute 8). Where K and V stream from memory (`streaming`: prefetch_kv), up to 8 rows
// take the head dimensions in the lanes however wide the vectors are: that layout prefetches K
// and V a tile ahead, and reads them in order. (A decoder step of 8 query heads per kv head on
// AVX2, beyond the last-level cache, took 0.74x the time at one thread and 0.78x at two, Zen 3;
// in cache the rows in lanes compute faster, up to 1.5x with 6 rows.)
template <class Fn>
void with_tiles(const WorkItem& w, bool streaming, const Fn& fn) {
  const int64_t rows = w.row_end - w.row_begin;
  if (2 * rows > lanes() && !(streaming && rows <= 8))
    return with_row_vectors((rows + lanes() - 1) / lanes(), fn);
  if (rows <= 1) fn(DimLanes<1>());
  else if (rows <= 2) fn(DimLanes<2>());
  else if (rows <= 4) fn(DimLanes<4>());
  else if (rows <= 6) fn(DimLanes<6>());
  else fn(DimLanes<8>());
}

}  // namespace

void Forward(const Problem& p) {
  const int threads = core::resolve_threads(p.num_threads);
  const core::TileShape tile{kRowVecs * lanes(), kKeysPerTile};

  // Everything sized by the problem is allocated before the first output is written.
  RowStats stats(p);
  const core::WorkPlan plan = core::plan_work(p, tile, threads);
  std::vector<float> partial_buffer(plan.partial_slots * tile.rows * (p.value_dim + 2));
  const PartialStates partials{partial_buffer.data(), tile.rows, p.value_dim};
  zero_inactive_rows(p);
  const std::vector<ItemRun> runs = item_runs(p, plan, threads);
  const bool prefetch = prefetch_kv(p);
  const auto n_runs = static_cast<int64_t>(runs.size());
  core::parallel_for(n_runs, threads, [&](int64_t i) {
    const WorkItem* items = &plan.items[runs[i].begin];
    const WorkItem* next = core::runs_next_on_same_thread(i, n_runs, threads)
                               ? &plan.items[runs[i + 1].begin]
                               : nullptr;
    with_tiles(items[0], prefetch, [&](auto tiles) {
      run_items<decltype(tiles)>(p, items, runs[i].count, partials, stats, prefetch, next);
    });
  });
  core::parallel_for(static_cast<int64_t>(plan.merges.size()), threads,
                     [&](int64_t i) { merge_splits(p, plan.merges[i], partials, stats); });

  if (p.weights.present()) {
    const core::WorkPlan rows_only = core::plan_work(p, tile, 1);
    core::parallel_for(static_cast<int64_t>(rows_only.items.size()), threads, [&](int64_t i) {
      const WorkItem& w = rows_only.items[i];
      with_tiles(w, prefetch, [&](auto tiles) { weights_item<decltype(tiles)>(p, w, stats); });
    });
  }
}

template <bool kNonPositive>
void VectorExpOf(const float* in, float* out, int64_t n) {
  const hn::ScalableTag<float> df;
  const int64_t N = lanes();
  int64_t i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(VectorExp<kNonPositive>(df, hn::LoadU(df, in + i)), df, out + i);
  if (i < n) {
    alignas(64) float tail[64] = {};  // more than any target's lanes
    std::copy(in + i, in + n, tail);
    hn::Store(VectorExp<kNonPositive>(df, hn::Load(df, tail)), df, tail);
    std::copy(tail, tail + (n - i), out + i);
  }
}

void VectorExpArray(const float* in, float* out, int64_t n, bool non_positive) {
  non_positive ? VectorExpOf<true>(in, out, n) : VectorExpOf<false>(in, out, n);
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

std::string ForwardTiles() {
  const int64_t N = lanes();
  return "forward " + std::to_string(kRowVecs * N) + " query rows x " +
         std::to_string(kKeysPerTile) + " keys per tile (where a head's K and V exceed the L2 " +
         "cache of " + std::to_string(core::cpu_profile().l2_bytes >> 10) + " KiB, up to " +
         std::to_string(kMaxItemsPerRun) + " such tiles of a head run together over " +
         std::to_string(core::cpu_profile().l2_bytes >> 11) + " KiB of keys at a time), " +
         "products in " + std::to_string(kRowVecs) + "x" +
         std::to_string(columns_per_block<kRowVecs>()) + " blocks of " + std::to_string(N) +
         "-lane vectors (decoder steps: head dimension in the lanes; where K and V exceed the " +
         "last-level cache of " + std::to_string(core::cpu_profile().llc_bytes >> 20) +
         " MiB, up to 8 rows in that layout and, for groups of rows, K and V prefetched a tile " +
         "ahead)";
}

bool HasBf16Dot() { return kHaveBf16Dot && cpu_has_bf16_dot(); }

}  // namespace xattn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace xattn::kernels {

HWY_EXPORT(Forward);
HWY_EXPORT(VectorExpArray);
HWY_EXPORT(TargetName);
HWY_EXPORT(HasBf16Dot);
HWY_EXPORT(ForwardTiles);

void run_forward(const core::Problem& p) { HWY_DYNAMIC_DISPATCH(Forward)(p); }
void vector_exp(const float* in, float* out, int64_t n, bool non_positive) {
  HWY_DYNAMIC_DISPATCH(VectorExpArray)(in, out, n, non_positive);
}
const char* dispatched_target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }
std::string dispatched_forward_tiles() { return HWY_DYNAMIC_DISPATCH(ForwardTiles)(); }
bool dispatched_bf16_dot_available() { return HWY_DYNAMIC_DISPATCH(HasBf16Dot)(); }

}  // namespace xattn::kernels
#endif
