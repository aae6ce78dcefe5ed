#pragma once
// Attention across processes over MPI, exact by log-sum-exp. A separate library (xattn_dist),
// not included by xattn.h, so that the core library has no MPI dependency.

#include <mpi.h>

#include <string>

#include "xattn/attention.h"
#include "xattn/params.h"
#include "xattn/tensor.h"

namespace xattn::dist {

// Cross-attention over keys split across the ranks of `comm`: every rank gets the exact result
// of attention() over the union of the shards, with identical bits on every rank.
//
// q [B, Hq, Lq, D] is the same on every rank. Rank r holds k_shard [B, Hkv, n_r, D] and
// v_shard [B, Hkv, n_r, Dv]: keys o_r .. o_r + n_r - 1 of the whole sequence, where
// o_r = n_0 + ... + n_{r-1} (rank order is key order). Shards may differ in length; n_r may be 0
// (an empty view still needs non-null data).
//
// params describe the whole problem, as attention() would see it on one process:
// - causal, align, window and diagonal_offset use GLOBAL key positions: a key's place in the
//   whole sequence decides whether a row sees it; bottom-right aligns with the whole length.
// - kv_lens are global lengths (each <= n_0 + ... + n_{P-1}), q_lens as usual; both the same
//   on every rank.
// - mask: this rank's columns of the whole mask, broadcasting to [B, Hq, Lq, n_r].
// - Everything except mask and num_threads must be the same on every rank.
// outputs.out [B, Hq, Lq, Dv] (f32 or the inputs' dtype) and optional lse [B, Hq, Lq] (f32);
// weights and accumulate are not supported.
//
// Each rank computes its shard's partial (out, lse) in f32; the partials are all-gathered and
// merged in rank order 0, 1, ..., P-1 on every rank (memory: P partials per rank).
//
// Errors: before computing, the ranks agree collectively on the arguments. When any rank's
// arguments are invalid, or the arguments that must match differ between ranks, EVERY rank
// throws xattn::Error naming the argument and the rank(s), and no output is written. Every rank
// makes the same collective calls in the same order, errors or not, so a bad argument never
// leaves the others waiting. What this cannot catch: a rank that never calls, or ranks that pass
// different communicators (they would wait for each other, as any MPI collective would).
// comm = MPI_COMM_NULL, an intercommunicator, or MPI not initialized throw at once on the ranks
// that see them.
void attention_split_kv(const TensorView& q, const TensorView& k_shard, const TensorView& v_shard,
                        const AttentionParams& params, MPI_Comm comm,
                        const AttentionOutputs& outputs);

// For a binding whose own checks failed on this rank before it could make the arguments (a
// wrong type, say): takes part in attention_split_kv's collective checks as a rank that rejects
// its arguments with `why`, so that the other ranks throw xattn::Error instead of waiting. Always
// throws xattn::Error on this rank too (the binding may raise its own error instead).
[[noreturn]] void reject_split_kv(MPI_Comm comm, const std::string& why);

}  // namespace xattn::dist
