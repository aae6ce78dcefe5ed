#pragma once
// The benchmark's shapes: a public suite of named attention problems from real models, plus the
// arithmetic that turns a time into GFLOP/s and K/V bytes per second.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "xattn/tensor.h"

namespace xattn::bench {

// Q [B, Hq, Lq, D], K [B, Hkv, Lk, D], V [B, Hkv, Lk, Dv] with Dv = D.
struct Shape {
  std::string name;
  int64_t B = 1, Hq = 1, Hkv = 1, Lq = 1, Lk = 1, D = 1;
  bool causal = false;  // top-left: key j is visible to query i iff j <= i

  int64_t Dv() const { return D; }
  // One query per head: the kernel streams K and V once and does little arithmetic per byte, so
  // memory bandwidth, not FLOPs, bounds it.
  bool bandwidth_bound() const { return Lq == 1; }
};

// The suite, in the order it is run; causal variants follow their full-attention shape.
std::span<const Shape> suite();

// The suite shape called `name`, or nullptr.
const Shape* find_suite_shape(std::string_view name);

// "whisper-decode, whisper-prefill, ...": for messages.
std::string suite_names();

// 4·B·Hq·Lq·Lk·D (Q·Kᵀ and P·V, 2 FLOPs per multiply-add), halved for causal.
double flops(const Shape& s);

// Bytes of K and V together in `dtype`: what a bandwidth-bound call must stream at least once.
double kv_bytes(const Shape& s, DType dtype);

}  // namespace xattn::bench
