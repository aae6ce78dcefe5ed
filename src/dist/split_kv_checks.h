#pragma once
// attention_split_kv's collective argument checks (step 1, agreement.h), shared by the forward
// and the backward: every rank's own arguments, the values that must match, and where each
// rank's shard sits in the whole key sequence.

#include <mpi.h>

#include <string>

#include "dist/shard_plan.h"
#include "xattn/attention.h"

namespace xattn::dist {

// What the checks establish: this rank's place among the ranks and its keys' place in the
// whole sequence (the total alike on every rank).
struct SplitKvPlace {
  int rank = 0, size = 1;
  Place keys;
};

// The first collective of attention_split_kv: throws the same xattn::Error on every rank when
// any rank's arguments are bad or the ranks disagree.
SplitKvPlace agree_split_kv_forward(const TensorView& q, const TensorView& k_shard,
                                    const TensorView& v_shard, const AttentionParams& params,
                                    MPI_Comm comm, const AttentionOutputs& outputs);

// The same for attention_split_kv_backward.
SplitKvPlace agree_split_kv_backward(const TensorView& q, const TensorView& k_shard,
                                     const TensorView& v_shard, const TensorView& out,
                                     const TensorView& lse, const TensorView& dout,
                                     const AttentionParams& params, MPI_Comm comm,
                                     const AttentionGradients& grads);

// Core's messages name the key and value tensors "k" and "v"; here they are the shards.
std::string shard_names(std::string message);

}  // namespace xattn::dist
