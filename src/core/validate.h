#pragma once
// Turns public API arguments into a core::Problem, or throws xattn::Error naming the argument,
// the dimension, what was expected and what was given. Nothing here reads tensor contents
// except the small length arrays.

#include <span>

#include "core/problem.h"
#include "xattn/attention.h"

namespace xattn::core {

Problem make_dense_problem(const TensorView& q, const TensorView& k, const TensorView& v,
                           const AttentionParams& params, const AttentionOutputs& outputs);

Problem make_varlen_problem(const TensorView& q, const TensorView& k, const TensorView& v,
                            std::span<const int64_t> cu_seqlens_q,
                            std::span<const int64_t> cu_seqlens_k, const AttentionParams& params,
                            const AttentionOutputs& outputs);

BackwardProblem make_backward_problem(const TensorView& q, const TensorView& k,
                                      const TensorView& v, const TensorView& out,
                                      const TensorView& lse, const TensorView& dout,
                                      const AttentionParams& params,
                                      const AttentionGradients& grads);

BackwardProblem make_varlen_backward_problem(const TensorView& q, const TensorView& k,
                                             const TensorView& v,
                                             std::span<const int64_t> cu_seqlens_q,
                                             std::span<const int64_t> cu_seqlens_k,
                                             const TensorView& out, const TensorView& lse,
                                             const TensorView& dout, const AttentionParams& params,
                                             const AttentionGradients& grads);

// The most threads a call may ask for (AttentionParams::num_threads); OpenMP would try to start
// them all, and a failure to start one ends the process.
inline constexpr int kMaxThreads = 4096;

// Shared by every entry point that takes a view: rank, sizes >= 0 (>= 1 for the last dim when
// last_positive: a feature width, D or Dv), non-null data (an empty view too: null means
// absent), and sizes and an address range whose arithmetic cannot overflow. `dims` names each
// dimension for messages.
void check_view(const char* arg, const TensorView& t, std::span<const char* const> dims,
                bool last_positive = false);

// Throws xattn::Error naming `arg` when an output view would write some element twice (a zero
// stride, or strides that step into each other).
void check_output(const char* arg, const MutableTensorView& t);
// Whether the address ranges of two views intersect (never for an empty view).
bool share_memory(const TensorView& a, const TensorView& b);

// Throws xattn::Error naming `what` when count·bytes_each bytes (or their overflow) exceed the
// machine's physical memory: such a request can never succeed, so it is refused as bad input
// before anything is allocated.
void check_memory(const char* what, int64_t count, int64_t bytes_each);
int64_t physical_memory_bytes();

}  // namespace xattn::core
