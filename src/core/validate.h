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

// Shared by every entry point that takes a view: rank, positive sizes, non-null data, and an
// address range whose arithmetic cannot overflow. `dims` names each dimension for messages.
void check_view(const char* arg, const TensorView& t, std::span<const char* const> dims);

}  // namespace xattn::core
