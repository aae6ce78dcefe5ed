"""xattn.attention_varlen on packed sequences vs the oracle run per sequence, and vs dense calls."""

import math

import numpy as np
import pytest
import torch

import xattn
import xattn_oracle as oracle
from random_cases import (TOLERANCE, assert_close, from_float64, lse_tolerance, make_array,
                          max_abs)
from xattn_oracle import to_f64

NUM_CASES = 70


def random_varlen_case(seed):
    rng = np.random.default_rng(seed)
    framework = str(rng.choice(["torch", "numpy"]))
    dtype = str(rng.choice(["float32", "float16"] + (["bfloat16"] if framework == "torch" else [])))
    batch = int(rng.integers(1, 5))
    heads_kv = int(rng.integers(1, 4))
    heads_q = heads_kv * int(rng.choice([1, 2, 4]))
    dim, dim_v = int(rng.choice([1, 7, 17, 64, 65])), int(rng.choice([1, 8, 17, 63]))
    # Lengths include empty sequences; the packed totals must stay >= 1.
    lens_q = [int(x) for x in rng.choice([0, 1, 7, 17, 40], size=batch)]
    lens_k = [int(x) for x in rng.choice([0, 1, 7, 17, 65], size=batch)]
    lens_q[0], lens_k[-1] = max(lens_q[0], 1), max(lens_k[-1], 1)
    cu_q = [0] + list(np.cumsum(lens_q))
    cu_k = [0] + list(np.cumsum(lens_k))
    layouts = ["contiguous", "permuted", "sliced", "transposed"]
    lay = [str(rng.choice(layouts)) for _ in range(3)]
    normal = rng.standard_normal
    q = make_array(normal, (cu_q[-1], heads_q, dim), framework, dtype, lay[0])
    k = make_array(normal, (cu_k[-1], heads_kv, dim), framework, dtype, lay[1])
    v = make_array(normal, (cu_k[-1], heads_kv, dim_v), framework, dtype, lay[2])

    kw = {}
    if rng.random() < 0.4:
        kw["causal"] = True
    if rng.random() < 0.5:
        kw["align"] = str(rng.choice(["top_left", "bottom_right"]))
    if rng.random() < 0.3:
        kw["window"] = (int(rng.choice([-1, 0, 2, 9])), int(rng.choice([-1, 0, 2, 9])))
    if rng.random() < 0.3:
        kw["scale"] = float(np.float32(rng.uniform(0.05, 1.0)))
    if rng.random() < 0.2:
        kw["softcap"] = float(np.float32(rng.uniform(1.0, 10.0)))
    if rng.random() < 0.4:
        max_q, max_k = max(lens_q), max(lens_k)
        target = (batch, heads_q, max(max_q, 1), max(max_k, 1))
        shape = tuple(t if rng.random() < 0.6 else 1 for t in target[4 - int(rng.integers(1, 5)):])
        if rng.random() < 0.5:
            kw["mask"] = from_float64(rng.random(shape) < 0.8, framework, "bool")
        else:
            kw["mask"] = from_float64(rng.standard_normal(shape), framework, "float32")
    kw["return_lse"] = bool(rng.random() < 0.6)
    kw["return_weights"] = bool(rng.random() < 0.5)
    # Offsets as a list, a numpy array or a torch tensor.
    form = int(rng.integers(3))
    cu_arg_q, cu_arg_k = [int(x) for x in cu_q], [int(x) for x in cu_k]
    if form == 1:
        cu_arg_q, cu_arg_k = np.array(cu_arg_q), np.array(cu_arg_k)
    elif form == 2:
        cu_arg_q, cu_arg_k = torch.tensor(cu_arg_q), torch.tensor(cu_arg_k)
    return dict(q=q, k=k, v=v, cu_q=[int(x) for x in cu_q], cu_k=[int(x) for x in cu_k],
                cu_arg_q=cu_arg_q, cu_arg_k=cu_arg_k, kw=kw, dtype=dtype, framework=framework,
                desc=f"seed={seed} {framework}/{dtype} lens_q={lens_q} lens_k={lens_k} "
                     f"Hq={heads_q} Hkv={heads_kv} D={dim} Dv={dim_v} layouts={lay} "
                     f"{ {k: v for k, v in kw.items() if k != 'mask'} } "
                     f"mask={None if 'mask' not in kw else (kw['mask'].dtype, kw['mask'].shape)}")


def per_sequence_oracle(c):
    """out [Tq, Hq, Dv], lse [Hq, Tq], weights [Hq, Tq, max_k] from the oracle, one sequence at a time."""
    q, k, v = to_f64(c["q"]), to_f64(c["k"]), to_f64(c["v"])
    cu_q, cu_k, kw = c["cu_q"], c["cu_k"], c["kw"]
    batch = len(cu_q) - 1
    heads_q = q.shape[1]
    max_q = max(b - a for a, b in zip(cu_q, cu_q[1:]))
    max_k = max(b - a for a, b in zip(cu_k, cu_k[1:]))
    out = torch.zeros(q.shape[0], heads_q, v.shape[2], dtype=torch.float64)
    lse = torch.full((heads_q, q.shape[0]), -math.inf, dtype=torch.float64)
    weights = torch.zeros(heads_q, q.shape[0], max_k, dtype=torch.float64)
    mask = kw.get("mask")
    if mask is not None:
        mask = to_f64(mask) if mask.dtype not in (np.bool_, torch.bool) else torch.as_tensor(mask)
        mask = mask.expand(batch, heads_q, max(max_q, 1), max(max_k, 1))
    options = {key: kw[key] for key in ("causal", "window", "align", "scale", "softcap") if key in kw}
    for b in range(batch):
        rows, keys = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        lq, lk = rows.stop - rows.start, keys.stop - keys.start
        if lq == 0 or lk == 0:
            continue  # no rows to write, or rows that see no key: 0 / -inf / 0 as initialised
        seq = [x[r].transpose(0, 1).unsqueeze(0) for x, r in ((q, rows), (k, keys), (v, keys))]
        m = None if mask is None else mask[b:b + 1, :, :lq, :lk]
        o, l, w = oracle.attention(*seq, mask=m, **options)
        out[rows] = o[0].transpose(0, 1)
        lse[:, rows] = l[0]
        weights[:, rows, :lk] = w[0]
    return out, lse, weights


@pytest.mark.parametrize("seed", range(NUM_CASES))
def test_varlen_matches_oracle(seed):
    c = random_varlen_case(seed)
    kw = c["kw"]
    result = xattn.attention_varlen(c["q"], c["k"], c["v"], c["cu_arg_q"], c["cu_arg_k"], **kw)
    extras = kw["return_lse"] or kw["return_weights"]
    results = list(result) if extras else [result]
    out = results.pop(0)
    lse = results.pop(0) if kw["return_lse"] else None
    weights = results.pop(0) if kw["return_weights"] else None
    assert type(out) is type(c["q"]) and out.dtype == c["q"].dtype

    ref_out, ref_lse, ref_w = per_sequence_oracle(c)
    tol = TOLERANCE[c["dtype"]]
    assert_close("out", out, ref_out, tol * max_abs(c["v"]), c["desc"])
    if lse is not None:
        assert_close("lse", lse, ref_lse, lse_tolerance(ref_lse), c["desc"])
    if weights is not None:
        assert_close("weights", weights, ref_w, tol, c["desc"])


@pytest.mark.parametrize("seed", range(0, NUM_CASES, 3))
def test_varlen_matches_dense_calls(seed):
    """Each packed sequence gives what a dense call on that sequence alone gives."""
    c = random_varlen_case(seed)
    kw = {key: val for key, val in c["kw"].items() if key not in ("mask", "return_lse",
                                                                  "return_weights")}
    out = xattn.attention_varlen(c["q"], c["k"], c["v"], c["cu_q"], c["cu_k"], **kw)
    tol = TOLERANCE[c["dtype"]] * max_abs(c["v"])
    for b in range(len(c["cu_q"]) - 1):
        rows = slice(c["cu_q"][b], c["cu_q"][b + 1])
        keys = slice(c["cu_k"][b], c["cu_k"][b + 1])
        if rows.stop == rows.start or keys.stop == keys.start:
            continue  # a dense call needs positive sizes
        # [L, H, D] -> [1, H, L, D], as views.
        q, k, v = (x[s][None].swapaxes(1, 2) if isinstance(x, np.ndarray)
                   else x[s][None].transpose(1, 2)
                   for x, s in ((c["q"], rows), (c["k"], keys), (c["v"], keys)))
        dense = xattn.attention(q, k, v, **kw)
        assert_close(f"sequence {b}", out[rows], to_f64(dense)[0].transpose(0, 1), tol, c["desc"])
