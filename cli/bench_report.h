#pragma once
// How `xattn bench` shows its figures: a text table (printed row by row as cases finish) and a
// JSON document with the same figures as numbers.

#include <ostream>
#include <string>
#include <vector>

#include "bench/machine_limits.h"
#include "bench/runner.h"
#include "bench/tile_kernels.h"

namespace xattn::cli {

// The run's settings and the machine limits for each thread count.
void print_machine(std::ostream& os, const bench::BenchPlan& plan,
                   const std::vector<bench::MachineLimits>& limits);

// The limits measured again after the cases, and a warning where any moved by more than 10% from
// the start: a host whose other load changed during the run (a shared machine) makes every
// fraction of the limits that much less certain.
void print_limits_after(std::ostream& os, const std::vector<bench::MachineLimits>& before,
                        const std::vector<bench::MachineLimits>& after);

// Column headings; which columns appear depends on the plan (thread list, dtypes, baseline).
void print_table_head(std::ostream& os, const bench::BenchPlan& plan);
void print_row(std::ostream& os, const bench::BenchPlan& plan, const bench::CaseResult& r);
// --profile: each case's stage shares, after the table.
void print_profiles(std::ostream& os, const std::vector<bench::CaseResult>& results);
// --profile: the tile kernels timed alone, as rates and fractions of one thread's FMA peak.
void print_tile_kernels(std::ostream& os, const std::vector<bench::TileKernelTimes>& tiles,
                        const std::vector<bench::MachineLimits>& limits);

// {"machine": {...}, "settings": {...}, "results": [...], "tile_kernels": [...]}: times in ms,
// rates in GFLOP/s and GB/s, fractions in [0, 1] (of the limits measured before the cases); null
// where a figure does not apply or is unavailable.
std::string to_json(const bench::BenchPlan& plan, const std::vector<bench::MachineLimits>& limits,
                    const std::vector<bench::MachineLimits>& limits_after,
                    const std::vector<bench::CaseResult>& results,
                    const std::vector<bench::TileKernelTimes>& tiles);

}  // namespace xattn::cli
