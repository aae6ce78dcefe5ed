#include "dist/agreement.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <thread>

#include "xattn/error.h"

namespace xattn::dist {

void RankReport::fail(const std::string& why) {
  if (!ok) return;  // the first error is the one to report
  ok = 0;
  const size_t n = std::min(why.size(), sizeof(message) - 1);
  std::memcpy(message, why.data(), n);
  message[n] = '\0';
}

namespace {

// A nonblocking all-gather, waited for until the deadline: a rank that never calls, or ranks
// that passed different communicators, would otherwise leave the others waiting for ever.
std::vector<RankReport> all_gather(MPI_Comm comm, const char* entry, const RankReport& mine) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  // The buffers of the collective, on the heap: one that times out stays active for ever, and
  // its buffers with it (MPI cannot cancel a collective).
  struct Buffers {
    RankReport mine;
    std::vector<RankReport> all;
  };
  auto buffers = std::make_unique<Buffers>(Buffers{mine, std::vector<RankReport>(size)});
  MPI_Request request;
  MPI_Iallgather(&buffers->mine, sizeof(RankReport), MPI_BYTE, buffers->all.data(),
                 sizeof(RankReport), MPI_BYTE, comm, &request);
  const double timeout = join_timeout_seconds();
  const double start = MPI_Wtime();
  for (int done = 0, spins = 0;; ++spins) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return std::move(buffers->all);
    if (timeout > 0 && MPI_Wtime() - start > timeout) {
      buffers.release();  // deliberately leaked: MPI may still write into it
      std::ostringstream os;
      os << entry << ": comm: not all of its " << size << " ranks joined the argument check "
         << "within " << timeout << " s (" << kTimeoutVariable << "): a rank did not call "
         << entry << ", or the ranks passed different communicators. The check stays "
         << "unfinished on this communicator: do not use it again";
      throw Error(os.str());
    }
    // Poll at once at first (the usual case: every rank is there), then yield the core.
    if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

void throw_if_any_failed(const char* entry, const std::vector<RankReport>& all) {
  std::vector<int> failed;
  for (size_t r = 0; r < all.size(); ++r)
    if (!all[r].ok) failed.push_back(static_cast<int>(r));
  if (failed.empty()) return;
  std::ostringstream os;
  os << entry << ": rank " << failed[0] << " of " << all.size() << " rejected its arguments: "
     << std::string(all[failed[0]].message, strnlen(all[failed[0]].message, kMessageBytes));
  if (failed.size() > 1) {
    os << " (ranks";
    for (size_t i = 1; i < failed.size(); ++i) os << " " << failed[i];
    os << " failed too)";
  }
  throw Error(os.str());
}

void throw_if_fields_differ(const char* entry, const std::vector<RankReport>& all,
                            std::span<const FieldName> fields) {
  for (size_t f = 0; f < fields.size(); ++f) {
    const int64_t want = all[0].values[f];
    std::ostringstream os;
    bool differs = false;
    for (size_t r = 1; r < all.size(); ++r) {
      if (all[r].values[f] == want) continue;
      if (!differs) {
        os << entry << ": " << fields[f].arg << ": " << fields[f].what;
        if (fields[f].digest) os << " differs between rank 0 and rank " << r;
        else os << " is " << want << " on rank 0 but " << all[r].values[f] << " on rank " << r;
      } else if (!fields[f].digest) {
        os << ", " << all[r].values[f] << " on rank " << r;
      } else {
        os << ", and rank " << r;
      }
      differs = true;
    }
    if (differs) {
      os << " (it must be the same on every rank)";
      throw Error(os.str());
    }
  }
}

}  // namespace

std::vector<RankReport> agree(MPI_Comm comm, const char* entry, const RankReport& mine,
                              std::span<const FieldName> fields) {
  std::vector<RankReport> all = all_gather(comm, entry, mine);
  throw_if_any_failed(entry, all);
  throw_if_fields_differ(entry, all, fields);
  return all;
}

void agree_ok(MPI_Comm comm, const char* entry, const RankReport& mine) {
  throw_if_any_failed(entry, all_gather(comm, entry, mine));
}

double join_timeout_seconds() {
  const char* text = std::getenv(kTimeoutVariable);
  if (!text || !*text) return kDefaultTimeoutSeconds;
  char* end = nullptr;
  const double seconds = std::strtod(text, &end);
  return *end == '\0' && seconds >= 0 ? seconds : kDefaultTimeoutSeconds;
}

int64_t list_digest(std::span<const int64_t> xs) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t x : xs)
    for (int i = 0; i < 8; ++i)
      h = (h ^ ((static_cast<uint64_t>(x) >> (8 * i)) & 0xff)) * 1099511628211ull;
  return static_cast<int64_t>(h);
}

int64_t float_bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

CommPlace check_comm(MPI_Comm comm, const char* entry) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized)
    throw Error(std::string(entry) + ": MPI is not initialized (or already finalized)");
  if (comm == MPI_COMM_NULL) throw Error(std::string(entry) + ": comm: is MPI_COMM_NULL");
  int inter = 0;
  MPI_Comm_test_inter(comm, &inter);
  if (inter) throw Error(std::string(entry) + ": comm: must be an intracommunicator");
  CommPlace place;
  MPI_Comm_rank(comm, &place.rank);
  MPI_Comm_size(comm, &place.size);
  return place;
}

}  // namespace xattn::dist
