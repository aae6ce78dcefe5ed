// Public entry points: validate once, then dispatch to the kernels. An allocation failure
// anywhere inside becomes xattn::Error (core/out_of_memory.h).

#include "xattn/attention.h"

#include "core/out_of_memory.h"
#include "core/validate.h"
#include "kernels/backward.h"
#include "kernels/forward.h"

namespace xattn {

void attention(const TensorView& q, const TensorView& k, const TensorView& v,
               const AttentionParams& params, const AttentionOutputs& outputs) {
  core::translate_allocation_failure("attention", [&] {
    kernels::run_forward(core::make_dense_problem(q, k, v, params, outputs));
  });
}

void validate_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                        const AttentionParams& params, const AttentionOutputs& outputs) {
  core::translate_allocation_failure("validate_attention",
                                     [&] { core::make_dense_problem(q, k, v, params, outputs); });
}

void attention_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                      std::span<const int64_t> cu_seqlens_q, std::span<const int64_t> cu_seqlens_k,
                      const AttentionParams& params, const AttentionOutputs& outputs) {
  core::translate_allocation_failure("attention_varlen", [&] {
    kernels::run_forward(
        core::make_varlen_problem(q, k, v, cu_seqlens_q, cu_seqlens_k, params, outputs));
  });
}

void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout,
                        const AttentionParams& params, const AttentionGradients& grads) {
  core::translate_allocation_failure("attention_backward", [&] {
    kernels::run_backward(core::make_backward_problem(q, k, v, out, lse, dout, params, grads));
  });
}

void validate_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                 const TensorView& out, const TensorView& lse,
                                 const TensorView& dout, const AttentionParams& params,
                                 const AttentionGradients& grads) {
  core::translate_allocation_failure("validate_attention_backward", [&] {
    core::make_backward_problem(q, k, v, out, lse, dout, params, grads);
  });
}

void attention_varlen_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                               std::span<const int64_t> cu_seqlens_q,
                               std::span<const int64_t> cu_seqlens_k, const TensorView& out,
                               const TensorView& lse, const TensorView& dout,
                               const AttentionParams& params, const AttentionGradients& grads) {
  core::translate_allocation_failure("attention_varlen_backward", [&] {
    kernels::run_backward(core::make_varlen_backward_problem(q, k, v, cu_seqlens_q, cu_seqlens_k,
                                                             out, lse, dout, params, grads));
  });
}

}  // namespace xattn
