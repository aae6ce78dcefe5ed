#include "dist/split_kv_steps.h"

#include <string>

#include "dist/agreement.h"
#include "dist/split_kv_checks.h"
#include "dist/views.h"
#include "xattn/error.h"

namespace xattn::dist {

CallInputs call_inputs(const ShardCall& call, const TensorView& q, const TensorView& k,
                       const TensorView& v, const TensorView& mask) {
  const int64_t b0 = call.batch_begin, nb = call.batch_count;
  CallInputs in{batches(q, b0, nb), batches(k, b0, nb), batches(v, b0, nb), call.params};
  in.params.mask = mask_block(mask, b0, nb, 0, q.size(2), 0, k.size(2));
  return in;
}

void agree_prepared(MPI_Comm comm, const char* entry, const std::string& buffers,
                    const std::function<void()>& prepare) {
  prepare_on_every_rank(comm, entry, buffers.c_str(), [&] {
    try {
      prepare();
    } catch (const Error& e) {
      throw Error(shard_names(e.what()));
    }
  });
}

void gather_parts(MPI_Comm comm, const char* entry, int rank, const char* what, Parts& parts,
                  const std::function<void(float*)>& compute) {
  float* mine = parts.slot(rank);
  float& status = mine[parts.floats - 1];
  std::string compute_error;
  try {
    compute(mine);
    status = 1.0f;
  } catch (const std::exception& e) {
    compute_error = e.what();
    status = 0.0f;
  }
  // Every rank joins, failed or not, so that none waits in vain.
  MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, parts.all.data(),
                static_cast<int>(parts.floats), MPI_FLOAT, comm);
  if (!compute_error.empty()) throw Error(std::string(entry) + ": " + shard_names(compute_error));
  for (int r = 0; r < parts.ranks; ++r)
    if (parts.slot(r)[parts.floats - 1] != 1.0f)
      throw Error(std::string(entry) + ": rank " + std::to_string(r) + " failed to compute its " +
                  what + " (its own error says why)");
}

}  // namespace xattn::dist
