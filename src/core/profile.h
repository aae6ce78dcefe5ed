#pragma once
// Where the kernels' time goes: time-stamp-counter cycles per stage, summed over threads,
// while profiling is on (`xattn bench --profile`). Off, a scope costs one relaxed load and a
// branch, next to stages of microseconds.

#include <array>
#include <atomic>
#include <cstdint>

namespace xattn::core::profile {

enum Stage : int {
  // forward, per work item
  kPackQueries,  // queries into the tile layout
  kScores,       // S = Q·Kᵀ, softcap, masks
  kSoftmax,      // online softmax: max, exp, sums, rescale factors
  kWeightedSum,  // acc = alpha·acc + P·V (and packing P, V for bf16)
  kFinish,       // acc / l, stores, key-split merges
  // backward, per (sequence, kv head) and tile pair
  kBwdPack,       // deltas, query rows into tiles
  kBwdScores,     // S = Q·Kᵀ, dP = dO·Vᵀ, softcap, masks
  kBwdGradients,  // P = e^(S - lse), dS = P·(dP - delta)
  kBwdKeyGrads,   // dV += Pᵀ·dO, dK += dSᵀ·Q
  kBwdQueryGrads, // dQ += dS·K
  kBwdFinish,     // stores of dK, dV, dQ
  kStages
};

const char* stage_name(Stage s);

extern std::atomic<bool> enabled;
uint64_t now();
void add(Stage s, uint64_t cycles);

// Adds the cycles of its lifetime to a stage, when profiling is on.
class Scope {
 public:
  explicit Scope(Stage s) : stage_(s), start_(enabled.load(std::memory_order_relaxed) ? now() : 0) {}
  ~Scope() {
    if (start_) add(stage_, now() - start_);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Stage stage_;
  uint64_t start_;
};

// Zeroes the sums and turns profiling on; stop() turns it off and returns the sums.
void start();
std::array<uint64_t, kStages> stop();

}  // namespace xattn::core::profile
