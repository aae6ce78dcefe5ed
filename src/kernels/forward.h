#pragma once

#include <string>
// The kernels' entry points. Each dispatches once, here, to the best SIMD target (Highway).

#include <cstdint>

#include "core/problem.h"

namespace xattn::kernels {

// Computes every output `p` asks for. `p` has been validated.
void run_forward(const core::Problem& p);

// The vectorised exp of the dispatched target, exposed for its accuracy test; non_positive: the
// softmax's form, for x <= 0 only.
void vector_exp(const float* in, float* out, int64_t n, bool non_positive = false);

// Name of the target the kernels dispatch to now.
const char* dispatched_target_name();

// Whether that target uses AVX-512 BF16 dot products for bf16 inputs on this CPU.
bool dispatched_bf16_dot_available();
// The dispatched target's tile shapes, in words.
std::string dispatched_forward_tiles();

}  // namespace xattn::kernels
