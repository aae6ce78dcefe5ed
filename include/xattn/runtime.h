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

// The CPU the kernels' choices were made for, from its identity, e.g. "AMD Zen 4" or
// "Intel Sapphire/Emerald Rapids" ("GenuineIntel family 6 model 85" for one not in the table).
std::string cpu_name();

// Whether bf16 inputs get AVX-512 BF16 dot products on the target in use (else they are
// widened to f32, at the f32 rate). They are used where the CPU and the target have them and
// they outrun f32 FMAs on this CPU: on AMD's Zen 4 and Zen 5, not on Intel's Xeons, whose one
// BF16 port runs at half the rate of their two FMA ports. bf16_dot_reason() says why.
bool bf16_dot_products();
std::string bf16_dot_reason();

// Forces the choice: "on" (where the CPU and the target have them), "off", or "auto" (the
// CPU's). For tests and benchmarks; not thread-safe: call it between computations. Throws
// xattn::Error for any other mode.
void force_bf16_dot_products(const std::string& mode);

// Where one head's K and V exceed the L2 cache, the forward's query tiles of a head run together
// over chunks of keys that fit in L2, so that K and V come from beyond it less often. Forces that
// choice: "on" (always; chunks of one key tile, the most cuts), "off" (never), or "auto". For
// tests and benchmarks, as force_bf16_dot_products; throws xattn::Error for any other mode.
void force_key_chunks(const std::string& mode);

// Where a decoder step's K and V exceed the last-level cache, the forward streams them: items of
// up to 8 query rows take the decode layout (head dimension in the lanes), and where a kv head
// serves several rows it prefetches K and V a key tile ahead. Forces that choice: "on" (always),
// "off" (never), or "auto". For tests and benchmarks, as force_bf16_dot_products; throws
// xattn::Error for any other mode.
void force_kv_prefetch(const std::string& mode);

// The tile shapes and register blocks of the SIMD target in use, in words (for `xattn info`).
std::string kernel_tiles();

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
