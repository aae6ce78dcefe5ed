#pragma once
// What the library chose at run time: version, SIMD target, threads.

#include <string>
#include <vector>

namespace xattn {

std::string version();

// The SIMD target the kernels dispatch to now, e.g. "AVX3_DL" or "AVX2".
std::string simd_target();

// Every target that was compiled in and that this CPU can run, best first.
std::vector<std::string> available_simd_targets();

// Restricts dispatch to one target (by name, from available_simd_targets()), for tests and
// benchmarks; an empty name restores the default. Not thread-safe: call it between computations.
void force_simd_target(const std::string& name);

// Whether bf16 inputs get AVX-512 BF16 dot products on the target in use (else they are
// widened to f32, at the f32 rate).
bool bf16_dot_products();

// Threads a call with num_threads = 0 uses.
int default_num_threads();

// The kernels OpenBLAS chose for this CPU (the layers' and models' matrix products), e.g.
// "SkylakeX". An OpenBLAS older than the CPU may fall back to "Prescott", its SSE3 kernels,
// several times slower; OPENBLAS_CORETYPE=SkylakeX in the environment (read when the process
// starts) picks the AVX-512 ones.
std::string blas_kernels();

// Sets the threads of later calls with num_threads = 0, and of the layers' and models' matrix
// products (OpenBLAS), for this thread of the caller (OpenMP's rule). Throws xattn::Error for n
// outside [1, 4096].
void set_default_num_threads(int n);

}  // namespace xattn
