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

// How many consecutive items parallel_for hands a thread at a time: a few where there are many,
// each take being an atomic on a line the threads share; the last takes are still small next to
// a thread's share.
inline int64_t dynamic_chunk(int64_t n, int threads) {
  return std::max<int64_t>(1, n / (int64_t{threads} * 32));
}

// Whether parallel_for(n, threads, ...) runs item i + 1 right after item i, on the same thread.
inline bool runs_next_on_same_thread(int64_t i, int64_t n, int threads) {
  return i + 1 < n && (threads <= 1 || (i + 1) % dynamic_chunk(n, threads) != 0);
}

template <class Body>
void parallel_for(int64_t n, int threads, const Body& body) {
  std::exception_ptr error;
  std::mutex error_mutex;
  const int64_t chunk = dynamic_chunk(n, threads);
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
