#pragma once
// Clocks for the benchmark: a monotonic wall clock, and the wall time of an OpenMP parallel
// region in which every thread runs the same loop (peaks and bandwidths are whole-machine
// figures, so all threads are timed together, start to last finisher).

#include <omp.h>

#include <chrono>
#include <limits>

namespace xattn::bench {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs body(thread_index, thread_count) on `threads` threads, `reps` times after one untimed
// round (which starts the thread pool and touches what the body touches), and returns the
// shortest round in seconds: the least disturbed one on a shared machine. `body` returns how much
// work it did (FLOPs, bytes), summed over threads into *work so that a runtime that grants fewer
// threads than asked still gives an honest rate.
template <class Body>
double best_parallel_seconds(int threads, int reps, const Body& body, double* work) {
  double best = std::numeric_limits<double>::infinity();
  for (int r = -1; r < reps; ++r) {
    double done = 0;
    const double t0 = now_seconds();
#pragma omp parallel num_threads(threads) reduction(+ : done)
    done += body(omp_get_thread_num(), omp_get_num_threads());
    const double t = now_seconds() - t0;
    if (r >= 0 && t < best) {
      best = t;
      *work = done;
    }
  }
  return best;
}

}  // namespace xattn::bench
