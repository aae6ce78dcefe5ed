"""Random inputs for the Python tests: arrays of either kind, dtype and memory layout, and random
attention configurations, all reproducible from a seed.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from xattn_oracle import to_f64

SIZES = (1, 7, 17, 63, 65)

# Tolerances, as a fraction of max|V| for out (out is a convex combination of V's rows) and
# absolute for weights (in [0, 1]).
#  float32: the library computes in f32; errors come from f32 dot products and exp (<= 2 ulp), a
#    few 1e-7 relative, so 1e-5 leaves a wide margin.
#  float16 / bfloat16: the oracle runs on the same 16-bit-rounded inputs, and accumulation is f32,
#    so the only sizable error is the final rounding of out / weights to 16 bits: half an ulp,
#    i.e. <= 2^-11 (f16) or 2^-8 (bf16) of |out| <= max|V|. We allow twice that.
TOLERANCE = {"float32": 1e-5, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}
# lse is always computed and stored in f32 (from the same 16-bit-exact inputs for 16-bit dtypes).
LSE_TOLERANCE = 1e-5

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def from_float64(values, framework, dtype):
    """values (a float64 / bool numpy array) as an array of the framework, rounded to dtype."""
    if framework == "numpy":
        return values.astype(np.bool_ if dtype == "bool" else NUMPY_DTYPES[dtype])
    t = torch.from_numpy(values)
    return t.to(torch.bool if dtype == "bool" else TORCH_DTYPES[dtype])


def make_array(values_fn, shape, framework, dtype, layout):
    """An array of `shape` whose memory layout is `layout`; values_fn(shape) makes the storage.

    contiguous: row-major. permuted: stored with dims 1 and 2 (rank 4) or 0 and 1 (rank 3)
    swapped, like [B, L, H, D] viewed as [B, H, L, D]. sliced: every other element of a larger
    buffer, offset by one along dim 0. transposed: last two dims swapped in memory.
    reversed: negative strides along dim -2 (numpy only; torch has no negative strides).
    broadcast: stride 0 along dim 0.
    """
    shape = tuple(shape)
    rank = len(shape)
    if layout == "reversed" and framework == "torch":
        layout = "sliced"
    if layout == "permuted" and rank >= 3:
        a, b = (1, 2) if rank == 4 else (0, 1)
        perm = list(range(rank))
        perm[a], perm[b] = perm[b], perm[a]
        base = from_float64(values_fn(tuple(shape[p] for p in perm)), framework, dtype)
        return base.transpose(perm) if framework == "numpy" else base.permute(perm)
    if layout == "transposed" and rank >= 2:
        base = from_float64(values_fn(shape[:-2] + (shape[-1], shape[-2])), framework, dtype)
        return base.swapaxes(-1, -2) if framework == "numpy" else base.transpose(-1, -2)
    if layout == "sliced" and rank == 1:
        return from_float64(values_fn((2 * shape[0] + 1,)), framework, dtype)[1::2]
    if layout == "sliced":
        base = from_float64(values_fn((shape[0] + 1,) + shape[1:-1] + (2 * shape[-1],)),
                            framework, dtype)
        return base[1:, ..., ::2]
    if layout == "reversed" and rank >= 2:
        base = from_float64(values_fn(shape), framework, dtype)
        return base[..., ::-1, :]
    if layout == "broadcast":
        base = from_float64(values_fn((1,) + shape[1:]), framework, dtype)
        if framework == "numpy":
            return np.broadcast_to(base, shape)
        return base.expand(shape)
    return from_float64(values_fn(shape), framework, dtype)


def random_lengths(rng, batch, limit, framework):
    """Per-batch lengths in [0, limit], as a list, numpy array or torch tensor."""
    lens = [int(x) for x in rng.integers(0, limit + 1, size=batch)]
    form = rng.integers(3)
    if form == 1:
        return lens, np.array(lens, dtype=np.int64)
    if form == 2 and framework == "torch":
        return lens, torch.tensor(lens, dtype=torch.int32)
    return lens, lens


@dataclass
class Case:
    """One randomized dense attention call and the inputs the oracle needs."""

    seed: int
    framework: str
    dtype: str
    three_d: bool
    shape: tuple  # (B, Hq, Hkv, Lq, Lk, D, Dv)
    layouts: tuple  # q, k, v
    kwargs: dict = field(default_factory=dict)  # keywords for xattn.attention
    oracle_kwargs: dict = field(default_factory=dict)
    q: object = None
    k: object = None
    v: object = None
    mask_desc: str = "none"

    def describe(self):
        kw = {k: v for k, v in self.kwargs.items() if k != "mask"}
        return (f"seed={self.seed} {self.framework}/{self.dtype} 3d={self.three_d} "
                f"(B,Hq,Hkv,Lq,Lk,D,Dv)={self.shape} layouts={self.layouts} mask={self.mask_desc} "
                f"{kw}")


def _f32(x):
    # Scale and softcap reach the library as float32; give the oracle the very same values.
    return float(np.float32(x))


def _random_mask(rng, case, target):
    """A bool or float mask broadcasting to `target`, and its float64/bool torch oracle form."""
    rank = int(rng.integers(1, len(target) + 1))
    shape = tuple(t if rng.random() < 0.6 else 1 for t in target[len(target) - rank:])
    layout = str(rng.choice(["contiguous", "transposed", "sliced"]))
    if rng.random() < 0.5:
        p_true = float(rng.choice([0.3, 0.8, 0.97]))
        mask = make_array(lambda s: rng.random(s) < p_true, shape, case.framework, "bool", layout)
        dtype = "bool"
    else:
        dtypes = ["float32", "float16"] + (["bfloat16"] if case.framework == "torch" else [])
        dtype = str(rng.choice(dtypes))
        p_inf = float(rng.choice([0.0, 0.1, 0.5]))

        def values(s):
            x = 2.0 * rng.standard_normal(s)
            x[rng.random(s) < p_inf] = -math.inf
            return x

        mask = make_array(values, shape, case.framework, dtype, layout)
    case.mask_desc = f"{dtype}{list(shape)}/{layout}"
    oracle = to_f64(mask) if dtype != "bool" else _to_bool_torch(mask)
    return mask, oracle


def _to_bool_torch(mask):
    if isinstance(mask, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(mask))
    return mask.contiguous()


def random_case(seed, framework=None):
    """A random dense attention case exercising every option; see Case.describe()."""
    rng = np.random.default_rng(seed)
    framework = framework or str(rng.choice(["torch", "numpy"]))
    dtypes = ["float32", "float16"] + (["bfloat16"] if framework == "torch" else [])
    dtype = str(rng.choice(dtypes, p=[0.5, 0.25, 0.25] if framework == "torch" else [0.6, 0.4]))

    def size(limit=80):
        return int(rng.choice(SIZES)) if rng.random() < 0.6 else int(rng.integers(1, limit))

    three_d = rng.random() < 0.15
    batch = int(rng.integers(1, 4))
    heads_kv = 1 if three_d else int(rng.integers(1, 4))
    heads_q = heads_kv * (1 if three_d else int(rng.choice([1, 2, 3])))
    len_q, len_k = size(), size()
    dim = size()
    dim_v = dim if rng.random() < 0.4 else size()
    layouts = ["contiguous", "permuted", "sliced", "transposed", "reversed", "broadcast"]
    lay = tuple(str(rng.choice(layouts, p=[0.35, 0.2, 0.15, 0.1, 0.1, 0.1])) for _ in range(3))
    case = Case(seed, framework, dtype, three_d, (batch, heads_q, heads_kv, len_q, len_k, dim, dim_v),
                lay)

    normal = rng.standard_normal
    value_scale = float(rng.choice([1.0, 0.1, 10.0]))
    q4, k4, v4 = (batch, heads_q, len_q, dim), (batch, heads_kv, len_k, dim), (batch, heads_kv,
                                                                              len_k, dim_v)
    shapes = [(s[0],) + s[2:] for s in (q4, k4, v4)] if three_d else [q4, k4, v4]
    case.q = make_array(normal, shapes[0], framework, dtype, lay[0])
    case.k = make_array(normal, shapes[1], framework, dtype, lay[1])
    case.v = make_array(lambda s: value_scale * normal(s), shapes[2], framework, dtype, lay[2])

    kw, ok = case.kwargs, case.oracle_kwargs
    if rng.random() < 0.35:
        kw["causal"] = ok["causal"] = True
    if rng.random() < 0.5:
        kw["align"] = ok["align"] = str(rng.choice(["top_left", "bottom_right"]))
    if rng.random() < 0.3:
        def side():
            return int(rng.choice([-1, 0, 1, 3, int(rng.integers(0, len_k + 1))]))
        kw["window"] = ok["window"] = (side(), side())
    if rng.random() < 0.3:
        ok["kv_lens"], kw["kv_lens"] = random_lengths(rng, batch, len_k, framework)
    if rng.random() < 0.25:
        ok["q_lens"], kw["q_lens"] = random_lengths(rng, batch, len_q, framework)
    if rng.random() < 0.3:
        kw["scale"] = ok["scale"] = _f32(rng.uniform(0.02, 1.0))
    if rng.random() < 0.25:
        kw["softcap"] = ok["softcap"] = _f32(rng.uniform(0.5, 20.0))
    if rng.random() < 0.5:
        target = (batch, len_q, len_k) if three_d else (batch, heads_q, len_q, len_k)
        kw["mask"], oracle_mask = _random_mask(rng, case, target)
        if three_d and oracle_mask.dim() == 3:
            oracle_mask = oracle_mask.unsqueeze(1)  # the head dim xattn inserts for 3-D inputs
        ok["mask"] = oracle_mask
    kw["return_lse"] = bool(rng.random() < 0.5)
    kw["return_weights"] = bool(rng.random() < 0.4)
    kw["num_threads"] = int(rng.choice([0, 1, 2, 3]))
    return case


def oracle_inputs(case):
    """q, k, v as contiguous float64 [B, H, L, D] torch tensors (the values the library reads)."""
    q, k, v = (to_f64(x) for x in (case.q, case.k, case.v))
    if case.three_d:
        q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
    return q, k, v


def lse_tolerance(ref_lse):
    """Absolute lse tolerance: LSE_TOLERANCE relative to the largest finite |lse| (at least 1)."""
    finite = ref_lse[torch.isfinite(ref_lse)]
    return LSE_TOLERANCE * (1.0 + (float(finite.abs().max()) if finite.numel() else 0.0))


def max_abs(x):
    x = to_f64(x)
    return float(x.abs().max()) if x.numel() else 0.0


def assert_close(name, got, ref, atol, context):
    """got (library output, any kind) vs ref (float64 torch); -inf must match exactly."""
    got = to_f64(got)
    assert tuple(got.shape) == tuple(ref.shape), f"{name}: shape {tuple(got.shape)} != " \
                                                 f"{tuple(ref.shape)}; {context}"
    inf_ref, inf_got = torch.isinf(ref), torch.isinf(got)
    if not torch.equal(inf_ref, inf_got) or not torch.equal(ref[inf_ref], got[inf_got]):
        bad = (inf_ref != inf_got).nonzero()[:5].tolist()
        raise AssertionError(f"{name}: infinities differ at {bad}; {context}")
    assert not torch.isnan(got).any(), f"{name}: NaN at {torch.isnan(got).nonzero()[:5].tolist()}" \
                                       f"; {context}"
    finite = ~inf_ref
    err = (got - ref).abs().masked_fill(~finite, 0.0)
    if err.numel() and float(err.max()) > atol:
        where = tuple(int(i) for i in np.unravel_index(int(err.argmax()), tuple(err.shape)))
        raise AssertionError(f"{name}: max error {float(err.max()):.3g} > {atol:.3g} at {where}: "
                             f"got {float(got[where]):.7g}, expected {float(ref[where]):.7g}; "
                             f"{context}")
