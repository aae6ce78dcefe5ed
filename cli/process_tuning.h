#pragma once
// For the commands that run whole models (transcribe, model): settings the libraries read only
// once, when they load, applied by restarting the process with them in its environment.

namespace xattn::cli {

// Whether OpenBLAS fell back to its SSE3 kernels ("Prescott") on a CPU with AVX-512 that it is
// too old to know (Debian 12's 0.3.21 on newer Xeons): its AVX-512 kernels are about twice as
// fast there (3.5x measured on the layers' matrix products).
bool blas_missed_avx512();

// Restarts this process (same arguments) with, unless the user set them:
// - OMP_WAIT_POLICY=passive. The layers use two thread pools, libgomp's (xattn's kernels) and
//   OpenBLAS's (the projections); both spin while idle, each on the cores the other is about to
//   use. On 2 cores that made the speech recogniser's encoder and decoder 3-6x slower than with
//   libgomp's threads sleeping when idle.
// - OPENBLAS_CORETYPE=SkylakeX where blas_missed_avx512().
// Returns without restarting when there is nothing to change (or the restart fails).
void restart_tuned_for_layers(char** argv);

}  // namespace xattn::cli
