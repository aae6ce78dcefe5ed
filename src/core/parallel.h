#pragma once
// Runs body(i) for i in [0, n) on `threads` OpenMP threads, dynamically scheduled (items have
// different costs, e.g. under causal masks). Results never depend on which thread runs an item.
// The first exception thrown by any item is rethrown on the calling thread.

#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>

#include <omp.h>

namespace xattn::core {

inline int resolve_threads(int requested) {
  return requested > 0 ? requested : omp_get_max_threads();
}

template <class Body>
void parallel_for(int64_t n, int threads, const Body& body) {
  std::exception_ptr error;
  std::mutex error_mutex;
  // Items are taken a few at a time where there are many, each take being an atomic on a line
  // the threads share; the last takes are still small next to a thread's share.
  const int64_t chunk = std::max<int64_t>(1, n / (int64_t{threads} * 32));
#pragma omp parallel for schedule(dynamic, chunk) num_threads(threads) if (n > 1 && threads > 1)
  for (int64_t i = 0; i < n; ++i) {
    try {
      body(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

// Like parallel_for, but item i runs on thread i % threads, in increasing order, and body(i, t)
// gets that thread's index t: per-thread partial results are then the same for a given thread
// count and can be reduced in a fixed order.
template <class Body>
void parallel_for_static(int64_t n, int threads, const Body& body) {
  std::exception_ptr error;
  std::mutex error_mutex;
#pragma omp parallel num_threads(threads) if (n > 1 && threads > 1)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int64_t i = t; i < n; i += nt) {
      try {
        body(i, t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace xattn::core
