#!/usr/bin/env python3
"""Writes the attention fuzzer's seed corpus (fuzz/corpus/attention_fuzz/): byte strings that
decode (fuzz/attention_case.h, decode_case then decode_corruptions) to valid calls of every
entry point and feature, and a few refused ones. Run it after changing the decoding; check a
seed with XATTN_FUZZ_VERBOSE=1 build-fuzz/fuzz/attention_fuzz SEED."""

import os

ENTRY = {"dense": 0, "varlen": 4, "backward": 6, "varlen_backward": 7}
DTYPE = {"f32": 0, "f16": 1, "bf16": 2}
BATCH = [1, 2, 1, 3, 2, 4, 1, 0]
HEADS = [1, 1, 2, 3, 1, 2, 4, 0]
GROUP = [1, 2, 1, 3, 4, 1, 2, 1]


def length(n):  # decode_length's inverse for 1..33 and 33 + 6k
    if 1 <= n <= 33:
        return n - 1
    assert (n - 33) % 6 == 0 and 33 < n <= 327
    return 200 + (n - 33) // 6


def dim(n):
    assert 1 <= n <= 40
    return n - 1


def seed(entry="dense", dtype="f32", B=1, Hkv=1, G=1, Lq=1, Lk=1, D=1, Dv=None, seqs=(),
         scale=0, softcap=0, causal=False, bottom_right=False, window=None, kv_lens=False,
         q_lens=False, bf16_p=False, mask=None, threads=1, target=0, out_input_dtype=False,
         no_lse=False, weights=None, grads=0, layouts=(), value_seed=1, values=0,
         corruptions=()):
    """The bytes decode_case reads, in its order. scale and softcap are raw bytes (0: default
    and off; else kScales[b % 10], kSoftcaps[b % 7]); layouts are (style, one byte per dim)
    tuples for the first arguments, the rest contiguous."""
    backward = entry in ("backward", "varlen_backward")
    b = [ENTRY[entry], DTYPE[dtype], BATCH.index(B), HEADS.index(Hkv), GROUP.index(G),
         length(Lq), length(Lk), dim(D), 0 if Dv is None else dim(Dv)]
    for lq, lk in seqs:  # varlen lengths are (x + 1) % 41
        b += [(lq - 1) % 41, (lk - 1) % 41]
    flags = (causal * 1 | bottom_right * 2 | (window is not None) * 4 | kv_lens * 8 |
             q_lens * 16 | bf16_p * 32 | (mask is not None) * 64)
    b += [scale, softcap, flags]
    if window is not None:
        b += list(window)
    b += [threads, target]
    if mask is not None:
        b += list(mask)  # (dtype + 5 * (rank - 1), bits of the dims that broadcast)
    outs = out_input_dtype * 1 | no_lse * 2
    if weights is not None:
        outs |= 4 | (weights == "input") * 8
    b += [outs]
    if backward:
        b += [grads]
    # q, k, v, [mask], out, [lse], [weights], then dout, dq, dk, dv, [dmask].
    float_mask = mask is not None and mask[0] % 5 != 0
    args = 3 + (mask is not None) + 1 + (backward or not no_lse) + (weights is not None and not backward)
    if backward:
        args += 4 + (bool(grads & 16) and float_mask)
    for i in range(args):
        b += list(layouts[i]) if i < len(layouts) else [0]
    b += list(value_seed.to_bytes(4, "big")) + [values]
    for c in corruptions:
        b += list(c)
    return bytes(b)


SEEDS = {
    # Dense, f32, GQA, causal bottom-right, weights.
    "dense_f32_gqa_causal": seed(B=2, Hkv=2, G=2, Lq=17, Lk=69, D=16, causal=True,
                                  bottom_right=True, weights="f32", threads=2),
    # bf16 with bf16 probabilities, a float mask broadcasting over heads, lengths.
    "dense_bf16_mask_lengths": seed(dtype="bf16", B=3, Hkv=1, G=3, Lq=9, Lk=40 - 7, D=8, Dv=12,
                                     kv_lens=True, q_lens=True, bf16_p=True, mask=(1 + 5 * 3, 2),
                                     value_seed=7, values=4),
    # f16, window + softcap, a bool mask of rank 2, f16 outputs.
    "dense_f16_window_softcap": seed(dtype="f16", B=1, Hkv=2, G=1, Lq=33, Lk=33, D=32,
                                      softcap=2, window=(3, 2), mask=(0 + 5 * 1, 0),
                                      out_input_dtype=True, weights="input", threads=3),
    # Permuted, padded and negative strides everywhere.
    "dense_strided": seed(B=2, Hkv=1, G=2, Lq=5, Lk=7, D=6, Dv=3, scale=3,
                           layouts=[(7, 0x41, 0x06, 0x02, 0x05), (13, 0x04, 0x01, 0x42, 0x03),
                                    (22, 0x3c, 0x01, 0x05, 0x40), (1, 0x02, 0x05, 0x01, 0x04),
                                    (3, 0x01, 0x04, 0x02)]),
    # Broadcast (stride 0) and overlapping input rows.
    "dense_broadcast_overlap": seed(B=2, Hkv=2, G=1, Lq=4, Lk=9, D=5,
                                     layouts=[(1, 0x38, 0, 0, 0), (1, 0, 0, 0x30, 0),
                                              (1, 0, 0x38, 0, 0)]),
    # One query row, many keys: the split-key path.
    "dense_decode_split": seed(B=1, Hkv=2, G=4, Lq=1, Lk=33 + 6 * 45, D=8, threads=2),
    # NaN and Inf in keys that no row sees (short kv_lens, causal).
    "dense_poison": seed(B=2, Hkv=1, G=1, Lq=12, Lk=20, D=4, causal=True, kv_lens=True,
                          value_seed=11, values=4 * 3),
    # Empty problem: B = 0.
    "dense_empty_batch": seed(B=0, Lq=3, Lk=4, D=2),
    # Varlen: three sequences, one empty, causal.
    "varlen_f32_causal": seed(entry="varlen", B=3, Hkv=1, G=2, D=8,
                               seqs=[(5, 9), (1, 1), (0, 3)], causal=True, weights="f32"),
    # Varlen bf16 with a mask and lse.
    "varlen_bf16_mask": seed(entry="varlen", dtype="bf16", B=2, Hkv=2, G=1, D=16,
                              seqs=[(7, 7), (3, 12)], mask=(1 + 5 * 3, 0), threads=2),
    # Dense backward with a float mask and its gradient.
    "backward_f32_dmask": seed(entry="backward", B=2, Hkv=1, G=2, Lq=6, Lk=10, D=8,
                                mask=(1 + 5 * 2, 1), grads=16, causal=True),
    # Dense backward, f16 inputs, f16 gradients, softcap.
    "backward_f16": seed(entry="backward", dtype="f16", B=1, Hkv=2, G=1, Lq=9, Lk=9, D=12,
                          softcap=1, grads=0b1110),
    # Varlen backward, bf16.
    "varlen_backward_bf16": seed(entry="varlen_backward", dtype="bf16", B=2, Hkv=1, G=1, D=8,
                                  seqs=[(4, 6), (2, 2)], threads=2),
    # Refused: k's dtype corrupted; q's stride overflowing; a null out; an aliased output.
    "refused_dtype": seed(B=1, Lq=4, Lk=4, D=4, corruptions=[(1, 1, 0, 1)]),
    "refused_stride": seed(B=2, Lq=4, Lk=4, D=4, corruptions=[(3, 0, 0, 3)]),
    "refused_null_out": seed(Lq=2, Lk=2, D=2, corruptions=[(5, 3, 0, 0)]),
    "refused_alias": seed(Lq=2, Lk=3, D=4, corruptions=[(7, 0, 0, 0)]),
}


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "attention_fuzz")
    os.makedirs(out_dir, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
