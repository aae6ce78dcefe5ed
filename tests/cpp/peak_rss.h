#pragma once
// The process's peak resident memory, for the memory tests (each runs in its own process).

#include <sys/resource.h>

namespace xattn::testing {

inline double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace xattn::testing
