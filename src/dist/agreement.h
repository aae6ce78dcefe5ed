#pragma once
// The collective checks of a distributed call. Each rank states whether its own arguments are
// good and the values that must match across ranks; one all-gather tells every rank what every
// rank said, so all of them reach the same verdict and throw the same xattn::Error together.

#include <mpi.h>

#include <cstdint>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "xattn/error.h"

namespace xattn::dist {

// A value every rank must give alike, and how to name it in an error.
struct FieldName {
  const char* arg;   // the argument that carries it, e.g. "q"
  const char* what;  // e.g. "D (head dim)"
  bool digest;       // the value is a digest of a list (print "differs", not the values)
};

inline constexpr int kMaxFields = 32;
inline constexpr int kMessageBytes = 400;

// What one rank tells the others: plain bytes over MPI (every rank runs the same binary).
struct RankReport {
  int64_t ok = 1;
  int64_t keys = 0;  // this rank's shard length
  int64_t values[kMaxFields] = {};
  char message[kMessageBytes] = {};  // the rank's own error, when !ok

  void fail(const std::string& why);
};

// All-gathers the reports (one collective, which every rank makes). Then, alike on every rank:
// throws when any rank failed, quoting the first failing rank's message, or when a field
// differs from rank 0's, naming it and the ranks. `entry` prefixes every message.
// When not every rank has joined within join_timeout_seconds() (a rank that never calls, or
// ranks that passed different communicators), throws on the ranks that wait, instead of
// hanging; the unfinished collective then stays on the communicator, which is unusable after.
std::vector<RankReport> agree(MPI_Comm comm, const char* entry, const RankReport& mine,
                              std::span<const FieldName> fields);

// The same with no fields: whether every rank could go on.
void agree_ok(MPI_Comm comm, const char* entry, const RankReport& mine);

// Runs `prepare` (this rank's buffers, and checks that need every rank's shape), then agrees
// with agree_ok that every rank could: an xattn::Error, or running out of memory for
// `memory_for`, on any rank makes every rank throw.
template <class Prepare>
void prepare_on_every_rank(MPI_Comm comm, const char* entry, const char* memory_for,
                           Prepare&& prepare) {
  RankReport ready;
  try {
    prepare();
  } catch (const Error& e) {
    ready.fail(e.what());
  } catch (const std::bad_alloc&) {
    ready.fail(std::string("out of memory for ") + memory_for);
  }
  agree_ok(comm, entry, ready);
}

// How long an agreement waits for every rank: $XATTN_DIST_TIMEOUT seconds (0: for ever), or
// kDefaultTimeoutSeconds when unset or not a number >= 0. Read at each call.
inline constexpr const char* kTimeoutVariable = "XATTN_DIST_TIMEOUT";
inline constexpr double kDefaultTimeoutSeconds = 600;
double join_timeout_seconds();

// A float's bits, as a field: values compare exactly, and a NaN equals itself.
int64_t float_bits(float x);

// A list's digest, as a field (FNV-1a over the values): equal lists give equal digests.
int64_t list_digest(std::span<const int64_t> xs);

// This rank's place in `comm`, after the checks that no collective can share (MPI initialized,
// comm not MPI_COMM_NULL, an intracommunicator): a rank that fails them cannot reach the others,
// so it throws xattn::Error at once, naming `entry`.
struct CommPlace {
  int rank = 0, size = 0;
};
CommPlace check_comm(MPI_Comm comm, const char* entry);

}  // namespace xattn::dist
