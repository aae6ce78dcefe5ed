#include "dist/shard_plan.h"

#include <algorithm>
#include <string>

#include "xattn/error.h"

namespace xattn::dist {
namespace {

// As core's bound on AttentionParams::diagonal_offset: sums of a few of these cannot overflow.
constexpr int64_t kMaxOffset = int64_t{1} << 61;

void check_lengths(const char* arg, std::span<const int64_t> lens, int64_t batch, int64_t limit,
                   const char* limit_name) {
  if (lens.empty()) return;
  if (static_cast<int64_t>(lens.size()) != batch)
    throw Error(std::string(arg) + ": expected " + std::to_string(batch) +
                " entries (one per batch), got " + std::to_string(lens.size()));
  for (size_t b = 0; b < lens.size(); ++b)
    if (lens[b] < 0 || lens[b] > limit)
      throw Error(std::string(arg) + "[" + std::to_string(b) + "] = " + std::to_string(lens[b]) +
                  " is out of range [0, " + limit_name + " = " + std::to_string(limit) + "]");
}

}  // namespace

ShardPlan plan_shard(const AttentionParams& params, int64_t batch, const Place& rows,
                     const Place& keys) {
  check_lengths("kv_lens", params.kv_lens, batch, keys.total, "the whole key length");
  check_lengths("q_lens", params.q_lens, batch, rows.total, "the whole query length");
  if (params.diagonal_offset < -kMaxOffset || params.diagonal_offset > kMaxOffset)
    throw Error("diagonal_offset: |diagonal_offset| must be at most 2^61 = " +
                std::to_string(kMaxOffset) + ", got " + std::to_string(params.diagonal_offset));
  ShardPlan plan;
  std::vector<int64_t> offsets(batch);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t kv = params.kv_lens.empty() ? keys.total : params.kv_lens[b];
    const int64_t q = params.q_lens.empty() ? rows.total : params.q_lens[b];
    const int64_t whole_shift = params.align == CausalAlign::kBottomRight ? kv - q : 0;
    // In 128 bits: each term is below 2^63, and the sum is checked before it is narrowed.
    const __int128 offset =
        __int128{whole_shift} + params.diagonal_offset + rows.first - keys.first;
    if (offset < -kMaxOffset || offset > kMaxOffset)
      throw Error("diagonal_offset: the part's diagonal offset (" + std::to_string(whole_shift) +
                  " + " + std::to_string(params.diagonal_offset) + " + first row " +
                  std::to_string(rows.first) + " - first key " + std::to_string(keys.first) +
                  ") is beyond 2^61 in size");
    offsets[b] = static_cast<int64_t>(offset);
  }
  for (int64_t len : params.kv_lens)
    plan.kv_lens.push_back(std::clamp<int64_t>(len - keys.first, 0, keys.count));
  for (int64_t len : params.q_lens)
    plan.q_lens.push_back(std::clamp<int64_t>(len - rows.first, 0, rows.count));

  AttentionParams local = params;
  local.align = CausalAlign::kTopLeft;
  local.kv_lens = plan.kv_lens;
  local.q_lens = plan.q_lens;
  const bool uniform =
      std::all_of(offsets.begin(), offsets.end(), [&](int64_t o) { return o == offsets[0]; });
  if (uniform) {
    local.diagonal_offset = batch ? offsets[0] : 0;
    plan.calls.push_back({0, batch, local});
    return plan;
  }
  for (int64_t b = 0; b < batch; ++b) {
    ShardCall call{b, 1, local};
    call.params.diagonal_offset = offsets[b];
    if (!plan.kv_lens.empty()) call.params.kv_lens = std::span(plan.kv_lens).subspan(b, 1);
    if (!plan.q_lens.empty()) call.params.q_lens = std::span(plan.q_lens).subspan(b, 1);
    plan.calls.push_back(call);
  }
  return plan;
}

}  // namespace xattn::dist
