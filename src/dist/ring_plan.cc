#include "dist/ring_plan.h"

#include <algorithm>
#include <string>

#include "xattn/error.h"

namespace xattn::dist {
namespace {

constexpr int64_t kMaxRows = int64_t{1} << 62;

}  // namespace

std::vector<std::vector<Segment>> ring_segments(RingLayout layout, std::span<const int64_t> rows) {
  const int64_t size = static_cast<int64_t>(rows.size());
  std::vector<std::vector<Segment>> segments(size);
  if (layout == RingLayout::kContiguous) {
    int64_t first = 0;
    for (int64_t r = 0; r < size; ++r) {
      segments[r].push_back({0, first, rows[r]});
      if (__builtin_add_overflow(first, rows[r], &first) || first > kMaxRows)
        throw Error("q: the ranks' rows add up beyond 2^62");
    }
    return segments;
  }
  // Zigzag: chunk r and its mirror 2P-1-r give every rank the same causal work.
  for (int64_t r = 1; r < size; ++r)
    if (rows[r] != rows[0])
      throw Error("q: the zigzag layout needs the same number of rows on every rank (2 chunks of "
                  "L/(2P)), but rank 0 holds " + std::to_string(rows[0]) + " and rank " +
                  std::to_string(r) + " holds " + std::to_string(rows[r]));
  if (size > 0 && rows[0] % 2 != 0)
    throw Error("q: the zigzag layout cuts the sequence into 2P = " + std::to_string(2 * size) +
                " equal chunks, so every rank holds an even number of rows; each holds " +
                std::to_string(rows[0]) + " (a sequence of " + std::to_string(rows[0] * size) +
                ", not a multiple of " + std::to_string(2 * size) + ")");
  if (size > 0 && rows[0] > kMaxRows / size)
    throw Error("q: the ranks' rows add up beyond 2^62");
  const int64_t chunk = size > 0 ? rows[0] / 2 : 0;
  for (int64_t r = 0; r < size; ++r) {
    segments[r].push_back({0, r * chunk, chunk});
    segments[r].push_back({chunk, (2 * size - 1 - r) * chunk, chunk});
  }
  return segments;
}

bool sees_any(const AttentionParams& call, int64_t rows, int64_t keys) {
  if (rows == 0 || keys == 0) return false;
  // Row i sees keys [p - left, p + right] (capped at p when causal), p = i + offset: intervals
  // that move one key per row and are never empty, so the rows' union is the interval from the
  // first row's lower end to the last row's upper end. In 128 bits: no bound can overflow.
  using Wide = __int128;
  const Wide first_p = call.diagonal_offset, last_p = first_p + rows - 1;
  if (call.window.left >= 0 && first_p - call.window.left > keys - 1) return false;
  Wide right_reach = call.window.right >= 0 ? Wide{call.window.right} : Wide{kMaxRows} * 4;
  if (call.causal && right_reach > 0) right_reach = 0;
  return last_p + right_reach >= 0;
}

int64_t max_length(std::span<const int64_t> lens, int64_t all) {
  return lens.empty() ? all : *std::max_element(lens.begin(), lens.end());
}

}  // namespace xattn::dist
