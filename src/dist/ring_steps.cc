#include "dist/ring_steps.h"

#include <algorithm>

#include "dist/ring_buffers.h"
#include "xattn/error.h"

namespace xattn::dist {
namespace {

constexpr int64_t kMaxPieces = 4;
constexpr int64_t kMinPieceRows = 256;  // a few query tiles: the kernels' work stays coarse

}  // namespace

KeyValueBlocks::KeyValueBlocks(const RingShape& shape, const TensorView& k, const TensorView& v)
    : shape_(shape) {
  int64_t most = 0;
  for (int r = 0; r < shape.size; ++r) most = std::max(most, bytes(r));
  for (auto& b : buffers_) b.resize(static_cast<size_t>(std::max<int64_t>(most, 1)));
  const BlockViews own = views(shape.rank, 0);
  pack(k, const_cast<void*>(own.k.data));
  pack(v, const_cast<void*>(own.v.data));
}

int64_t KeyValueBlocks::bytes(int owner) const {
  return (shape_.block_elements(owner, shape_.D) + shape_.block_elements(owner, shape_.Dv)) *
         dtype_size(shape_.dtype);
}

BlockViews KeyValueBlocks::views(int owner, int buffer) const {
  const RingShape& s = shape_;
  char* base = const_cast<char*>(buffers_[buffer].data());
  const int64_t n = s.rows[owner];
  char* v = base + s.block_elements(owner, s.D) * dtype_size(s.dtype);
  return {dense_view(base, s.dtype, s.B, s.Hkv, n, s.D), dense_view(v, s.dtype, s.B, s.Hkv, n, s.Dv)};
}

void KeyValueBlocks::post_next(const RingComm& ring, int step, std::vector<MPI_Request>& transfers) {
  const int now = block_owner(shape_.rank, step, shape_.size);
  const int next = block_owner(shape_.rank, step + 1, shape_.size);
  post_exchange(ring, Stream::kKeysValues, buffers_[step % 2].data(), bytes(now),
                buffers_[(step + 1) % 2].data(), bytes(next), transfers);
}

std::vector<Segment> progress_pieces(const Segment& rows) {
  const int64_t pieces = std::clamp<int64_t>(rows.length / kMinPieceRows, 1, kMaxPieces);
  std::vector<Segment> out;
  for (int64_t i = 0, done = 0; i < pieces; ++i) {
    const int64_t end = i + 1 == pieces ? rows.length : rows.length * (i + 1) / pieces / 64 * 64;
    out.push_back({rows.local + done, rows.global + done, end - done});
    done = end;
  }
  return out;
}

void agree_compute(MPI_Comm comm, const char* entry, const std::string& failure) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  const int mine = failure.empty() ? 1 : 0;
  std::vector<int> ok(size);
  MPI_Allgather(&mine, 1, MPI_INT, ok.data(), 1, MPI_INT, comm);
  if (!failure.empty()) throw Error(std::string(entry) + ": " + failure);
  for (int r = 0; r < size; ++r)
    if (!ok[r])
      throw Error(std::string(entry) + ": rank " + std::to_string(r) + " of " +
                  std::to_string(size) + " failed to compute its part (its own error says why)");
}

}  // namespace xattn::dist
