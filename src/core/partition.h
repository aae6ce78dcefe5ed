#pragma once
// Splits one attention call into independent work items for the threads.
//
// Rows: the query heads of one GQA group are flattened into one row space, r = i·G + g, so a
// work item reads each K/V tile once for all G heads (and several beams of one sequence would
// likewise be rows of one call). A row tile is a range of such rows of one (sequence, kv head).
// Keys: when there are too few row tiles to keep every thread busy (a decoder step has Lq = 1),
// each row tile's keys are split into parts whose partial softmax states are merged afterwards
// in a fixed order, so results do not depend on scheduling.

#include <cstdint>
#include <vector>

#include "core/problem.h"

namespace xattn::core {

struct TileShape {
  int64_t rows = 64;  // flattened query rows per work item
  int64_t keys = 64;  // keys per inner tile
};

struct WorkItem {
  int64_t seq = 0, kv_head = 0;
  int64_t row_begin = 0, row_end = 0;  // flattened rows r = i·G + g
  int64_t key_begin = 0, key_end = 0;  // keys this item covers
  int32_t split = 0, num_splits = 1;
  int64_t partial_slot = -1;           // first of num_splits partial-state slots, or -1
};

struct WorkPlan {
  std::vector<WorkItem> items;        // by kv head, most work first, for dynamic scheduling
  std::vector<WorkItem> merges;       // one per split row tile: merge its slots, then finalize
  int64_t partial_slots = 0;          // slots of tile.rows partial states each
  TileShape tile;
};

WorkPlan plan_work(const Problem& p, TileShape tile, int num_threads);

}  // namespace xattn::core
