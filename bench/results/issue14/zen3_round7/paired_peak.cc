// Alternates an FMA peak round and one attention call; prints both per pair.
#include <cstdio>
#include <vector>
#include <algorithm>
#include "bench/machine_limits.h"
#include "bench/timing.h"
#include "xattn/attention.h"
using namespace xattn;
int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 1;
  const int64_t H = 16, L = 2048, D = 64;
  std::vector<float> q(H * L * D), k(q.size()), v(q.size()), o(q.size());
  for (size_t i = 0; i < q.size(); ++i) q[i] = ((i * 2654435761u) % 1000) * 1e-3f - 0.5f, k[i] = q[(i * 7) % q.size()], v[i] = q[(i * 13) % q.size()];
  auto t = [&](std::vector<float>& x) { return view(x.data(), {1, H, L, D}); };
  AttentionParams p; p.num_threads = threads;
  const double flops = 4.0 * H * L * L * D;
  for (int i = 0; i < 40; ++i) {
    const int tc[] = {threads};
    auto lim = bench::measure_machine_limits(tc);
    double t0 = bench::now_seconds();
    attention(view((const float*)q.data(), {1, H, L, D}), view((const float*)k.data(), {1, H, L, D}), view((const float*)v.data(), {1, H, L, D}), p, AttentionOutputs{view(o.data(), {1, H, L, D})});
    double s = bench::now_seconds() - t0;
    printf("%.2f %.4f %.4f\n", lim[0].fma_gflops, s, flops / s * 1e-9 / lim[0].fma_gflops);
    fflush(stdout);
  }
}
