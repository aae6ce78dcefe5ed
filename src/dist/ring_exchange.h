#pragma once
// The ring's messages: a private communicator, and nonblocking block transfers to the next rank
// that proceed while the current block is computed on.

#include <mpi.h>

#include <cstdint>
#include <vector>

namespace xattn::dist {

// A duplicate of the caller's communicator (collective), so that the ring's messages can never
// match receives the caller has posted on its own; freed when it goes out of scope.
class RingComm {
 public:
  explicit RingComm(MPI_Comm comm);
  ~RingComm();
  RingComm(const RingComm&) = delete;
  RingComm& operator=(const RingComm&) = delete;
  MPI_Comm get() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  int next() const { return (rank_ + 1) % size_; }             // where blocks go
  int previous() const { return (rank_ + size_ - 1) % size_; }  // where they come from

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

// Distinct tags keep two streams between the same ranks apart (K/V blocks and their gradients).
enum class Stream : int { kKeysValues = 0, kGradients = 1 };

// Posts the send of send_bytes to `next` and the receive of recv_bytes from `previous`, in
// pieces of at most 1 GiB (MPI counts are int), appending their requests.
void post_exchange(const RingComm& ring, Stream stream, const void* send, int64_t send_bytes,
                   void* recv, int64_t recv_bytes, std::vector<MPI_Request>& requests);

// Lets posted transfers move on between computations: MPI progresses a large message only
// inside MPI calls, so a rank that computes without calling would leave it waiting.
void progress(std::vector<MPI_Request>& requests);

void wait_all(std::vector<MPI_Request>& requests);

}  // namespace xattn::dist
