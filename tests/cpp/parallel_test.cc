// core::parallel_for's scheduling promise that the forward's prefetches rely on: where
// runs_next_on_same_thread(i) holds, the thread that ran item i runs item i + 1 next.

#include <gtest/gtest.h>
#include <omp.h>

#include <mutex>
#include <vector>

#include "core/parallel.h"

namespace xattn::core {
namespace {

TEST(ParallelFor, RunsNextOnSameThreadMeansTheThreadRunsItNext) {
  for (const int threads : {1, 2, 3, 4}) {
    for (const int64_t n : {1, 2, 7, 64, 200, 1000}) {
      std::vector<std::vector<int64_t>> order(threads);  // the items each thread ran, in order
      std::mutex m;
      parallel_for(n, threads, [&](int64_t i) {
        std::lock_guard<std::mutex> lock(m);
        order[omp_get_thread_num()].push_back(i);
      });
      std::vector<int> thread_of(n, -1);
      std::vector<int64_t> after(n, -1);  // the item its thread ran next
      for (int t = 0; t < threads; ++t)
        for (size_t k = 0; k < order[t].size(); ++k) {
          thread_of[order[t][k]] = t;
          if (k + 1 < order[t].size()) after[order[t][k]] = order[t][k + 1];
        }
      int64_t promised = 0;
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NE(thread_of[i], -1) << "item " << i << " of " << n << " did not run";
        if (!runs_next_on_same_thread(i, n, threads)) continue;
        ++promised;
        EXPECT_EQ(after[i], i + 1) << "n " << n << ", " << threads << " threads: item " << i;
      }
      // Not vacuous: with many items per thread, many are followed by their neighbour.
      if (n / threads >= 64) {
        EXPECT_GE(promised, n / 3) << "n " << n << ", " << threads << " threads";
      }
    }
  }
}

}  // namespace
}  // namespace xattn::core
