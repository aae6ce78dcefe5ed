#pragma once
// The backward kernel's entry point; it dispatches once, here, to the best SIMD target.

#include <string>

#include "core/problem.h"

namespace xattn::kernels {

// Writes dq, dk and dv of `p`, which has been validated.
void run_backward(const core::BackwardProblem& p);

// The dispatched target's backward tile shapes, in words.
std::string dispatched_backward_tiles();

}  // namespace xattn::kernels
