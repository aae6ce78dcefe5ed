#include "dist/agreement.h"

#include <algorithm>
#include <cstring>
#include <sstream>

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

std::vector<RankReport> all_gather(MPI_Comm comm, const RankReport& mine) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  std::vector<RankReport> all(size);
  MPI_Allgather(&mine, sizeof(RankReport), MPI_BYTE, all.data(), sizeof(RankReport), MPI_BYTE,
                comm);
  return all;
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
  std::vector<RankReport> all = all_gather(comm, mine);
  throw_if_any_failed(entry, all);
  throw_if_fields_differ(entry, all, fields);
  return all;
}

void agree_ok(MPI_Comm comm, const char* entry, const RankReport& mine) {
  throw_if_any_failed(entry, all_gather(comm, mine));
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
