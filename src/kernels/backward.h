#pragma once
// The backward kernel's entry point; it dispatches once, here, to the best SIMD target.

#include "core/problem.h"

namespace xattn::kernels {

// Writes dq, dk and dv of `p`, which has been validated.
void run_backward(const core::BackwardProblem& p);

}  // namespace xattn::kernels
