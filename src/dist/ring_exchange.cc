#include "dist/ring_exchange.h"

#include <algorithm>

namespace xattn::dist {
namespace {

constexpr int64_t kPieceBytes = int64_t{1} << 30;
constexpr int kPiecesPerStream = 1 << 20;  // tags: stream · this + piece

}  // namespace

RingComm::RingComm(MPI_Comm comm) {
  MPI_Comm_dup(comm, &comm_);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

RingComm::~RingComm() {
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void post_exchange(const RingComm& ring, Stream stream, const void* send, int64_t send_bytes,
                   void* recv, int64_t recv_bytes, std::vector<MPI_Request>& requests) {
  const int tag0 = static_cast<int>(stream) * kPiecesPerStream;
  for (int64_t at = 0, piece = 0; at < recv_bytes; at += kPieceBytes, ++piece) {
    requests.emplace_back();
    MPI_Irecv(static_cast<char*>(recv) + at, static_cast<int>(std::min(kPieceBytes, recv_bytes - at)),
              MPI_BYTE, ring.previous(), tag0 + static_cast<int>(piece), ring.get(), &requests.back());
  }
  for (int64_t at = 0, piece = 0; at < send_bytes; at += kPieceBytes, ++piece) {
    requests.emplace_back();
    MPI_Isend(static_cast<const char*>(send) + at,
              static_cast<int>(std::min(kPieceBytes, send_bytes - at)), MPI_BYTE, ring.next(),
              tag0 + static_cast<int>(piece), ring.get(), &requests.back());
  }
}

void progress(std::vector<MPI_Request>& requests) {
  if (requests.empty()) return;
  int done = 0;
  MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
}

void wait_all(std::vector<MPI_Request>& requests) {
  MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE);
  requests.clear();
}

}  // namespace xattn::dist
