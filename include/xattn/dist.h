#pragma once
// Attention across processes over MPI, exact by log-sum-exp. A separate library (xattn_dist),
// not included by xattn.h, so that the core library has no MPI dependency.

#include <mpi.h>

#include <cstdint>
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
// leaves the others waiting. A rank that never calls, or ranks that pass different
// communicators, cannot be told from a slow rank: the ranks that wait throw xattn::Error after
// $XATTN_DIST_TIMEOUT seconds (600 by default; 0 waits for ever), and the communicator, which
// then holds an unfinished collective, must not be used again.
// comm = MPI_COMM_NULL, an intercommunicator, or MPI not initialized throw at once on the ranks
// that see them.
void attention_split_kv(const TensorView& q, const TensorView& k_shard, const TensorView& v_shard,
                        const AttentionParams& params, MPI_Comm comm,
                        const AttentionOutputs& outputs);

// Gradients for attention_split_kv. q, k_shard, v_shard, params and comm as given to it (params
// global, mask this rank's columns). out [B, Hq, Lq, Dv] and lse [B, Hq, Lq] (f32, required):
// the WHOLE result as attention_split_kv returned it, the same on every rank; an f32 out is the
// most exact (delta = rowsum(dout ⊙ out) cancels). dout shaped like out (f32 or the inputs'
// dtype), the same on every rank: out is replicated, so the loss must be computed alike on
// every rank. grads (f32 or the inputs' dtype): dq [B, Hq, Lq, D], the whole problem's and
// the same bits on every rank; dk [B, Hkv, n_r, D] and dv [B, Hkv, n_r, Dv], this shard's.
// dmask is not supported (an error).
//
// With the whole out and lse, each rank's attention_backward over its shard gives its exact
// dk, dv and its keys' share of dq; the shares are all-gathered and added in f32 in rank order
// 0, 1, ..., P-1 on every rank (memory: P shares of dq per rank).
//
// Errors: as attention_split_kv. The ranks agree collectively on the arguments (everything
// except mask and num_threads must match, and the dtypes of out, dout, dq, dk and dv too);
// bad arguments on any rank make EVERY rank throw xattn::Error naming the argument and the
// rank(s), with no gradient written. A rank that never calls: as attention_split_kv.
void attention_split_kv_backward(const TensorView& q, const TensorView& k_shard,
                                 const TensorView& v_shard, const TensorView& out,
                                 const TensorView& lse, const TensorView& dout,
                                 const AttentionParams& params, MPI_Comm comm,
                                 const AttentionGradients& grads);

// For a binding whose own checks failed on this rank before it could make the arguments (a
// wrong type, say): takes part in the collective checks of the call the other ranks make (any
// call here: each begins with the same all-gather of every rank's verdict) as a rank that
// rejects its arguments with `why`, so that the other ranks throw xattn::Error instead of
// waiting. Always throws xattn::Error on this rank too (the binding may raise its own instead).
[[noreturn]] void reject_call(MPI_Comm comm, const std::string& why);

// How a sequence of L rows is spread over the P ranks of a ring (Q, K and V alike).
enum class RingLayout : uint8_t {
  // Rank r holds rows o_r .. o_r + n_r - 1, o_r = n_0 + ... + n_{r-1}; the n_r may differ (and
  // be 0). Causal work is unbalanced: rank r's rows see r + 1 of the P blocks.
  kContiguous,
  // The sequence is cut into 2P chunks of c = L / (2P) rows; rank r holds chunks r and 2P-1-r,
  // concatenated (n_r = 2c on every rank). Causal, every rank then does the same work
  // (striped/zigzag ring attention). L must be a multiple of 2P: pad a sequence that is not,
  // and pass its real length as kv_lens and q_lens.
  kZigzag,
};

// Exact self-attention over a sequence split by rows across the ranks of `comm` (ring attention):
// each rank gets its rows of what attention() over the whole sequence gives, memory per rank
// linear in its own rows. K/V blocks pass around the ring (rank r sends to r + 1); while a step
// computes on one block, the next one arrives.
//
// q [B, Hq, n_r, D], k [B, Hkv, n_r, D], v [B, Hkv, n_r, Dv]: this rank's rows, placed by
// `layout`, any strides, f32/f16/bf16. outputs.out [B, Hq, n_r, Dv] (f32 or the inputs' dtype),
// optional lse [B, Hq, n_r] (f32; the backward needs it). Partial results are f32 throughout.
//
// params describe the whole sequence of L rows as attention() would see it, in GLOBAL positions:
// - causal, align, window, softcap, scale and diagonal_offset: a key's place in the sequence
//   decides what sees it. Without lengths, top-left and bottom-right are the same.
// - kv_lens, q_lens: the whole sequence's valid lengths per batch (each in [0, L]); rows past
//   q_lens get zeros (lse -inf), keys past kv_lens are invisible, as on one process.
// - mask: this rank's rows of the whole mask, in its local row order, and every key in global
//   order: it broadcasts to [B, Hq, n_r, L] (a [B, 1, 1, L] key-padding mask is the same on
//   every rank). It stays with its rank; each step cuts out the travelling block's columns.
// Not supported (an error): outputs.weights, outputs.accumulate.
// Everything except mask and num_threads must be the same on every rank.
//
// Errors: as attention_split_kv, the ranks agree on the arguments collectively before anything
// is computed or sent; bad arguments on any rank, values that differ between ranks, or zigzag
// shards of different or odd lengths make EVERY rank throw xattn::Error naming the argument
// and the rank(s), with no output written. Every rank makes the same collective calls in the
// same order, errors or not. A rank that never calls, or ranks that pass different
// communicators: as attention_split_kv, the ranks that wait throw after $XATTN_DIST_TIMEOUT s.
void ring_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                    const AttentionParams& params, MPI_Comm comm, RingLayout layout,
                    const AttentionOutputs& outputs);

// Gradients for ring_attention: q, k, v, params, comm and layout as given to it; out and lse
// this rank's rows as it returned them; dout shaped like out (f32 or the inputs' dtype). grads:
// dq, dk, dv shaped like this rank's q, k, v (f32 or the inputs' dtype); no dmask (a mask gets
// no gradient here). Gradients
// of the K/V blocks travel with them and reach their owner after P steps; sums are f32 in a
// fixed order, so the same inputs on the same ranks give the same bits. Errors as the forward.
void ring_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, const TensorView& lse, const TensorView& dout,
                             const AttentionParams& params, MPI_Comm comm, RingLayout layout,
                             const AttentionGradients& grads);

}  // namespace xattn::dist
