#pragma once
// What attention_split_kv and its backward share after the argument checks: the inputs of each
// of a shard's calls, the collective check that every rank could plan its calls and buffers
// (step 2), and the all-gather of every rank's part with a status word (step 3).

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dist/shard_plan.h"
#include "xattn/params.h"
#include "xattn/tensor.h"

namespace xattn::dist {

// One call's inputs: q, k and v cut to its batches, and its params with its block of the mask.
struct CallInputs {
  TensorView q, k, v;
  AttentionParams params;
};
CallInputs call_inputs(const ShardCall& call, const TensorView& q, const TensorView& k,
                       const TensorView& v, const TensorView& mask);

// Every rank's part of a result in rank order: `floats` f32 per rank, the last a status word
// (1: computed) that tells the other ranks whether to trust the rest.
struct Parts {
  int64_t floats = 0;
  int ranks = 0;
  std::vector<float> all;
  void resize(int64_t per_rank, int ranks_) {
    floats = per_rank, ranks = ranks_;
    all.resize(static_cast<size_t>(per_rank) * ranks);
  }
  float* slot(int rank) { return all.data() + floats * rank; }
};

// Step 2, collective: runs `prepare` (the plan, the buffers, a validate-only pass over the
// calls) and throws the same xattn::Error on every rank when any rank's threw xattn::Error or
// ran out of memory (`buffers` names what it allocates, for that message).
void agree_prepared(MPI_Comm comm, const char* entry, const std::string& buffers,
                    const std::function<void()>& prepare);

// Step 3, collective: `compute` fills this rank's slot but the status word; then the slots are
// all-gathered. Throws on every rank when any rank's compute failed (`what` names the part).
void gather_parts(MPI_Comm comm, const char* entry, int rank, const char* what, Parts& parts,
                  const std::function<void(float*)>& compute);

}  // namespace xattn::dist
