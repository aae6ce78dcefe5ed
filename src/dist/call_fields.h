#pragma once
// The values of a distributed call that every rank must give alike, shared by split-KV and the
// ring: q's dtype, the outputs' dtypes, and the params (positions and lengths are global in both).
// Each entry's report lists its own shape fields, then these, then its own extras.

#include <array>
#include <cstddef>
#include <cstdint>

#include "dist/agreement.h"
#include "xattn/attention.h"

namespace xattn::dist {

// The dtypes (and lse's presence) that must match besides q's: out and lse in a forward; also
// dout, dq, dk and dv in a backward (-1 where an entry has no such argument).
struct OutputDtypes {
  int64_t out = -1, lse = -1, dout = -1, dq = -1, dk = -1, dv = -1;
};
OutputDtypes forward_dtypes(const AttentionOutputs& outputs);
OutputDtypes backward_dtypes(const TensorView& out, const TensorView& lse, const TensorView& dout,
                             const AttentionGradients& grads);

inline constexpr std::array<FieldName, 20> kCallFields = {{
    {"q", "dtype", false},
    {"out", "dtype", false},
    {"lse", "presence", false},
    {"dout", "dtype", false},
    {"dq", "dtype", false},
    {"dk", "dtype", false},
    {"dv", "dtype", false},
    {"scale", "presence", false},
    {"scale", "value's bits", false},
    {"softcap", "value's bits", false},
    {"causal", "value", false},
    {"align", "value", false},
    {"window", "left", false},
    {"window", "right", false},
    {"diagonal_offset", "value", false},
    {"kv_lens", "length", false},
    {"kv_lens", "list", true},
    {"q_lens", "length", false},
    {"q_lens", "list", true},
    {"bf16_probabilities", "value", false},
}};

// Writes kCallFields' values from x on; returns the end.
int64_t* fill_call_fields(int64_t* x, DType q_dtype, const AttentionParams& p,
                          const OutputDtypes& t);

// The fields a, then b: an entry's whole list.
template <size_t A, size_t B>
constexpr std::array<FieldName, A + B> join_fields(const std::array<FieldName, A>& a,
                                                   const std::array<FieldName, B>& b) {
  std::array<FieldName, A + B> all{};
  for (size_t i = 0; i < A; ++i) all[i] = a[i];
  for (size_t i = 0; i < B; ++i) all[A + i] = b[i];
  return all;
}

}  // namespace xattn::dist
