// Ring attention across processes, as the sequence grows: per rank, the time of
// xattn::dist::ring_attention and ring_attention_backward, the peak memory, and the bytes this
// rank sent against the theoretical count. Run it under mpirun with 1 rank (the single-process
// baseline: one ring step is one attention() call) and with more, and compare the lines:
//
//   mpirun -np 1 build/bench/xattn_ring_bench --lengths 2048,4096,8192
//   mpirun -np 4 build/bench/xattn_ring_bench --lengths 2048,4096,8192 --layout zigzag
//
// Options (--name value): --lengths L1,L2,.. (rounded up to a multiple of 2P), --batch 1,
// --heads 8, --dim 64, --causal 1, --layout zigzag|contiguous, --runs 3, --threads 0 (OpenMP's
// default; under mpirun give each rank its share of the cores).
//
// Bytes sent are counted by wrapping MPI_Isend (MPI's profiling interface: this program's
// MPI_Isend is found before the library's, and passes the call on to PMPI_Isend), so they are
// what the ring put on the wire. Theory, per rank holding n = L/P rows:
//   forward:  K/V blocks go P - 1 times round: (P-1)·n·(D + Dv)·B·Hkv·bytes, which is (P-1)/P of
//             the whole sequence's K/V (sent, and as much received: 2·(P-1)/P in all)
//   backward: the same K/V traffic, plus the f32 gradients of each block, sent P times:
//             P·n·(D + Dv)·B·Hkv·4 = the whole sequence's dK/dV in f32.
// Peak memory is the process's peak resident set (getrusage), growing with the largest length
// so far: run the lengths in increasing order.

#include <mpi.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "xattn/dist.h"
#include "xattn/xattn.h"

namespace {

int64_t g_bytes_sent = 0;

}  // namespace

extern "C" int MPI_Isend(const void* buf, int count, MPI_Datatype type, int dest, int tag,
                         MPI_Comm comm, MPI_Request* request) {
  int size = 0;
  MPI_Type_size(type, &size);
  g_bytes_sent += int64_t{count} * size;
  return PMPI_Isend(buf, count, type, dest, tag, comm, request);
}

namespace {

using namespace xattn;

struct Options {
  std::vector<int64_t> lengths = {1024, 2048, 4096};
  int64_t batch = 1, heads = 8, dim = 64;
  bool causal = true;
  dist::RingLayout layout = dist::RingLayout::kZigzag;
  int runs = 3, threads = 0;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string name = argv[i], value = argv[i + 1];
    if (name == "--lengths") {
      o.lengths.clear();
      std::stringstream ss(value);
      for (std::string item; std::getline(ss, item, ',');) o.lengths.push_back(std::stoll(item));
    } else if (name == "--batch") o.batch = std::stoll(value);
    else if (name == "--heads") o.heads = std::stoll(value);
    else if (name == "--dim") o.dim = std::stoll(value);
    else if (name == "--causal") o.causal = value != "0";
    else if (name == "--layout")
      o.layout = value == "contiguous" ? dist::RingLayout::kContiguous : dist::RingLayout::kZigzag;
    else if (name == "--runs") o.runs = std::stoi(value);
    else if (name == "--threads") o.threads = std::stoi(value);
    else {
      std::fprintf(stderr, "unknown option %s (see the comment at the top of ring_bench.cc)\n",
                   name.c_str());
      std::exit(2);
    }
  }
  return o;
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // KiB on Linux
}

// The median over runs of the slowest rank's time, in ms, and the bytes this rank sent per run.
template <class F>
std::pair<double, int64_t> time_it(int runs, F&& call) {
  std::vector<double> ms;
  int64_t bytes = 0;
  for (int r = 0; r < runs; ++r) {
    MPI_Barrier(MPI_COMM_WORLD);
    const int64_t before = g_bytes_sent;
    const auto t0 = std::chrono::steady_clock::now();
    call();
    double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    bytes = g_bytes_sent - before;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], bytes};
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const Options o = parse(argc, argv);
  const int64_t B = o.batch, H = o.heads, D = o.dim;
  if (rank == 0) {
    std::printf("ring_attention, %d rank(s), %s layout, %s, B %lld, H %lld, D %lld, f32, %d runs "
                "(median; time of the slowest rank)\n",
                size, o.layout == dist::RingLayout::kZigzag ? "zigzag" : "contiguous",
                o.causal ? "causal" : "not causal", static_cast<long long>(B),
                static_cast<long long>(H), static_cast<long long>(D), o.runs);
    std::printf("| L | rows/rank | forward ms | backward ms | peak MiB/rank (max) | fwd sent MiB/rank "
                "| theory | bwd sent MiB/rank | theory |\n|---|---|---|---|---|---|---|---|---|\n");
  }
  std::mt19937_64 rng(1 + rank);
  std::normal_distribution<float> normal;
  for (int64_t asked : o.lengths) {
    const int64_t L = (asked + 2 * size - 1) / (2 * size) * (2 * size);
    const int64_t n = L / size;
    auto random = [&](int64_t count) {
      std::vector<float> x(count);
      for (float& f : x) f = normal(rng);
      return x;
    };
    const std::vector<float> q = random(B * H * n * D), k = random(B * H * n * D),
                             v = random(B * H * n * D), dout = random(B * H * n * D);
    std::vector<float> out(B * H * n * D), lse(B * H * n), dq(q.size()), dk(k.size()), dv(v.size());
    AttentionParams params;
    params.causal = o.causal;
    params.num_threads = o.threads;
    const auto fwd = time_it(o.runs, [&] {
      dist::ring_attention(view(q.data(), {B, H, n, D}), view(k.data(), {B, H, n, D}),
                           view(v.data(), {B, H, n, D}), params, MPI_COMM_WORLD, o.layout,
                           {view(out.data(), {B, H, n, D}), view(lse.data(), {B, H, n})});
    });
    const auto bwd = time_it(o.runs, [&] {
      dist::ring_attention_backward(
          view(q.data(), {B, H, n, D}), view(k.data(), {B, H, n, D}), view(v.data(), {B, H, n, D}),
          view(out.data(), {B, H, n, D}), view(lse.data(), {B, H, n}),
          view(dout.data(), {B, H, n, D}), params, MPI_COMM_WORLD, o.layout,
          {view(dq.data(), {B, H, n, D}), view(dk.data(), {B, H, n, D}), view(dv.data(), {B, H, n, D})});
    });
    double peak = peak_rss_mib();
    MPI_Allreduce(MPI_IN_PLACE, &peak, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    const double mib = 1.0 / (1 << 20);
    const double kv_block = static_cast<double>(B * H * n * 2 * D);  // elements of K and V
    // Backward: the K/V blocks again, and each block's f32 dK/dV passed on P times (not at all
    // by a rank alone, which keeps its own).
    const double fwd_theory = (size - 1) * kv_block * 4;
    const double bwd_theory = fwd_theory + (size > 1 ? size : 0) * kv_block * 4;
    if (rank == 0)
      std::printf("| %lld | %lld | %.1f | %.1f | %.0f | %.2f | %.2f | %.2f | %.2f |\n",
                  static_cast<long long>(L), static_cast<long long>(n), fwd.first, bwd.first, peak,
                  fwd.second * mib, fwd_theory * mib, bwd.second * mib, bwd_theory * mib);
  }
  MPI_Finalize();
  return 0;
}
