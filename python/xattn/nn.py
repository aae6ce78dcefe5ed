"""Layers on the fused kernel: torch.nn.MultiheadAttention's forward in C++, with decoder caches.

    mha = xattn.nn.MultiheadAttention.from_torch(torch_mha)   # same weights, same options
    out, weights = mha(query, key, value, key_padding_mask=pad)

    cache = mha.make_cache(batch)                  # the encoder output, projected once
    mha.extend_cache(cache, memory, memory)
    for step in ...:
        out, _ = mha.forward_cached(token, cache, need_weights=False)

Inputs are numpy arrays or CPU torch tensors (float32, float16, bfloat16); outputs come back as
the same kind and dtype. Inference only: there is no dropout and no autograd through layers.
"""

from collections.abc import Mapping

import numpy as np

from . import _arrays as A
from . import _xattn
from ._attention import _params as _attention_params
from ._safetensors import _path

KVCache = _xattn.KVCache
KVCache.__doc__ = """Keys and values projected once per position: the encoder output for a
decoder's cross-attention, or the decoder's own growing self-attention. Made by
MultiheadAttention.make_cache; grows through extend_cache (its capacity doubles as needed). Not
safe to extend from several threads at once."""


_bool = A.check_bool


def _int(x, arg, minimum, maximum=2**63 - 1):
    """x as an int in [minimum, maximum] (maximum: what the binding's C type holds)."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{arg}: expected an int, got {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"{arg}: must be >= {minimum}, got {x}")
    if x > maximum:
        raise ValueError(f"{arg}: must be <= {maximum}, got {x}")
    return int(x)


_INT_MAX, _UINT64_MAX = 2**31 - 1, 2**64 - 1


def _input(x, arg, kind=None):
    """(kind, spec) of a float input; kind must match `kind` when given."""
    this = A.kind_of(x, arg)
    if kind is not None and this != kind:
        raise TypeError(f"{arg}: do not mix numpy arrays and torch tensors")
    A.check_dtype(x, arg, A.FLOAT_DTYPES)
    return this, A.spec(x, arg)


def _mask(x, arg, kind):
    if x is None:
        return None
    if A.kind_of(x, arg) != kind:
        raise TypeError(f"{arg}: do not mix numpy arrays and torch tensors")
    A.check_dtype(x, arg, A.MASK_DTYPES)
    return A.spec(x, arg)


def _like(result, kind, like):
    """A float32 numpy result as `like`'s kind and dtype."""
    if result is None:
        return None
    if kind == A.NUMPY:
        return result if like.dtype == np.float32 else result.astype(like.dtype)
    import torch
    out = torch.from_numpy(result)
    return out if like.dtype == torch.float32 else out.to(like.dtype)


def _parameter_specs(state_dict, names):
    """The binding's specs of the named entries of a state dict (absent names are left out; the
    layer reports them). Tensors that require grad are read through .detach()."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of names to arrays, got "
                        f"{type(state_dict).__name__}")
    specs = {}
    for name in names:
        if name in state_dict:
            x = state_dict[name]
            if hasattr(x, "detach"):
                x = x.detach()
            A.kind_of(x, name)
            A.check_dtype(x, name, A.FLOAT_DTYPES)
            specs[name] = A.spec(x, name)
    return specs


class MultiheadAttention:
    """torch.nn.MultiheadAttention's forward (inference), on xattn's fused kernel.

    The constructor takes torch's options; parameters start as fixed pseudo-random values until
    load_state_dict, load_safetensors or from_torch gives trained ones. dropout is not an option:
    layers here run inference only.
    """

    def __init__(self, embed_dim, num_heads, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, seed=0):
        self.embed_dim = _int(embed_dim, "embed_dim", 1)
        self.num_heads = _int(num_heads, "num_heads", 1)
        self.kdim = embed_dim if kdim is None else _int(kdim, "kdim", 1)
        self.vdim = embed_dim if vdim is None else _int(vdim, "vdim", 1)
        self.batch_first = _bool(batch_first, "batch_first")
        self._layer = _xattn.MultiheadAttention(
            self.embed_dim, self.num_heads, self.kdim, self.vdim, _bool(bias, "bias"),
            _bool(add_bias_kv, "add_bias_kv"), _bool(add_zero_attn, "add_zero_attn"),
            self.batch_first, _int(seed, "seed", 0, _UINT64_MAX))

    @classmethod
    def from_torch(cls, module):
        """A layer with `module`'s options and a copy of its parameters."""
        import torch
        if not isinstance(module, torch.nn.MultiheadAttention):
            raise TypeError(f"module: expected a torch.nn.MultiheadAttention, got "
                            f"{type(module).__name__}")
        if module.dropout != 0.0 and module.training:
            raise ValueError(f"module: dropout {module.dropout} in training mode has no "
                             "counterpart here; call module.eval() first")
        layer = cls(module.embed_dim, module.num_heads, bias=module.in_proj_bias is not None,
                    add_bias_kv=module.bias_k is not None, add_zero_attn=module.add_zero_attn,
                    kdim=module.kdim, vdim=module.vdim, batch_first=module.batch_first)
        layer.load_state_dict(module.state_dict())
        return layer

    def parameter_names(self):
        """torch's state_dict names of this layer's parameters."""
        return self._layer.parameter_names()

    def load_state_dict(self, state_dict):
        """Copies parameters in from a mapping of torch's names to arrays or tensors (any float
        dtype). Every parameter is checked before any is changed."""
        self._layer.load_state_dict(_parameter_specs(state_dict, self.parameter_names()))

    def load_safetensors(self, path, prefix=""):
        """Loads the parameters from a safetensors file saved from torch, under `prefix`
        (e.g. "decoder.layers.0.encoder_attn.")."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix: expected a str, got {type(prefix).__name__}")
        self._layer.load_safetensors(_path(path), prefix)

    def __call__(self, query, key, value, key_padding_mask=None, need_weights=True,
                 attn_mask=None, average_attn_weights=True, is_causal=False, num_threads=0):
        return self.forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                            average_attn_weights, is_causal, num_threads)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False, num_threads=0):
        """torch.nn.MultiheadAttention.forward: returns (out, weights or None).

        query [L, N, E] ([N, L, E] with batch_first, [L, E] unbatched), key [S, N, kdim], value
        [S, N, vdim]. key_padding_mask [N, S] and attn_mask [L, S] or [N*num_heads, L, S] follow
        torch: bool True means "may not attend", floats are added to the scores. is_causal adds
        torch's causal mask (query i sees keys j <= i). A query that sees no key at all gets
        zeros before the output projection, where torch returns NaN.
        """
        kind, q = _input(query, "query")
        _, k = _input(key, "key", kind)
        _, v = _input(value, "value", kind)
        out, weights = self._layer.forward(
            q, k, v, _mask(key_padding_mask, "key_padding_mask", kind),
            _mask(attn_mask, "attn_mask", kind), _bool(is_causal, "is_causal"),
            _bool(need_weights, "need_weights"), _bool(average_attn_weights, "average_attn_weights"),
            _int(num_threads, "num_threads", 0, _INT_MAX))
        return _like(out, kind, query), _like(weights, kind, query)

    def make_cache(self, batch, capacity=0):
        """An empty KVCache for `batch` sequences, with room for `capacity` positions."""
        return self._layer.make_cache(_int(batch, "batch", 1), _int(capacity, "capacity", 0))

    def extend_cache(self, cache, key, value):
        """Projects key [S, N, kdim] and value [S, N, vdim] (layouts as in forward, N =
        cache.batch) and appends them to the cache."""
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache: expected an xattn.nn.KVCache, got {type(cache).__name__}")
        kind, k = _input(key, "key")
        _, v = _input(value, "value", kind)
        self._layer.extend_cache(cache, k, v)

    def forward_cached(self, query, cache, key_padding_mask=None, need_weights=False,
                       attn_mask=None, average_attn_weights=True, is_causal=False, num_threads=0):
        """forward() against the cache's keys and values. The query's batch may be a multiple of
        cache.batch: query rows n*beams .. n*beams+beams-1 then share sequence n, with no copy.
        is_causal treats the query as the cache's last L positions (a decoder's self-attention
        after extend_cache with the same tokens). key_padding_mask is [cache.batch,
        cache.length]."""
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache: expected an xattn.nn.KVCache, got {type(cache).__name__}")
        kind, q = _input(query, "query")
        out, weights = self._layer.forward_cached(
            q, cache, _mask(key_padding_mask, "key_padding_mask", kind),
            _mask(attn_mask, "attn_mask", kind), _bool(is_causal, "is_causal"),
            _bool(need_weights, "need_weights"), _bool(average_attn_weights, "average_attn_weights"),
            _int(num_threads, "num_threads", 0, _INT_MAX))
        return _like(out, kind, query), _like(weights, kind, query)


class Attention:
    """Attention whose queries, keys and values each come from any of the inputs.

        # SelfDoc: queries and values from the text, keys from the layout features
        layer = xattn.nn.Attention([256, 128], query=0, key=1, value=0, num_heads=4, qk_dim=64)
        out = layer(text, layout)                          # [N, L_text, 256]

    Args:
      input_widths: the feature width of each input sequence; inputs are [N, L_i, width_i].
      query, key, value: the index of the input each is projected from.
      num_heads: heads; qk_dim and v_dim (default: the query input's width) are the total
        projection widths, num_heads * D and num_heads * Dv.
      bias: biases on the projections.
      out_proj: project the heads' concatenation back to the query input's width; without it
        the output is v_dim wide.
      scaled: scores times 1/sqrt(D); False gives softmax(q @ k^T) as DANet and CCNet use it.
      residual: "none" (out = y), "add" (out = x_query + gamma * y, DANet / DRANet / CCNet) or
        "scale" (out = gamma * y); the learned gamma starts at 0.
    Parameters (load_state_dict names): q_proj.weight [qk_dim, width_q], q_proj.bias, k_proj.*,
    v_proj.* [v_dim, width_v], out_proj.* [width_q, v_dim], gamma [1].
    """

    def __init__(self, input_widths, query=0, key=0, value=0, num_heads=1, qk_dim=None,
                 v_dim=None, bias=True, out_proj=True, scaled=True, residual="none", seed=0):
        try:
            widths = [_int(w, "input_widths", 1) for w in input_widths]
        except TypeError as e:
            if isinstance(input_widths, (list, tuple)):
                raise
            raise TypeError(f"input_widths: expected a list of ints, got "
                            f"{type(input_widths).__name__}") from e
        if not isinstance(residual, str):
            raise TypeError(f"residual: expected 'none', 'add' or 'scale', got "
                            f"{type(residual).__name__}")
        self._layer = _xattn.Attention(
            widths, _int(query, "query", 0, _INT_MAX), _int(key, "key", 0, _INT_MAX),
            _int(value, "value", 0, _INT_MAX),
            _int(num_heads, "num_heads", 1), 0 if qk_dim is None else _int(qk_dim, "qk_dim", 1),
            0 if v_dim is None else _int(v_dim, "v_dim", 1), _bool(bias, "bias"),
            _bool(out_proj, "out_proj"), _bool(scaled, "scaled"), residual,
            _int(seed, "seed", 0, _UINT64_MAX))
        self.input_widths = widths
        self._query = query

    def parameter_names(self):
        return self._layer.parameter_names()

    def load_state_dict(self, state_dict):
        """Copies parameters in (arrays or tensors of any float dtype); all are checked first."""
        self._layer.load_state_dict(_parameter_specs(state_dict, self.parameter_names()))

    def __call__(self, *inputs, mask=None, causal=False, window=None, align="top_left",
                 softcap=0.0, kv_lens=None, q_lens=None, num_threads=0):
        """The layer on its inputs (in input_widths' order), each [N, L_i, width_i]. The kernel
        options are xattn.attention's (the mask broadcasts to [N, num_heads, L_q, L_k]); the
        result is [N, L_q, out width], of the query input's kind and dtype."""
        if not inputs:
            raise TypeError("inputs: expected the input sequences, got none")
        kind = None
        specs = []
        for i, x in enumerate(inputs):
            kind, spec = _input(x, f"inputs[{i}]", kind)
            specs.append(spec)
        if mask is not None:
            _mask(mask, "mask", kind)
        params = _attention_params(mask, causal, window, align, None, softcap, kv_lens, q_lens,
                                   num_threads, False)
        return _like(self._layer.forward(specs, params), kind, inputs[self._query])


__all__ = ["MultiheadAttention", "Attention", "KVCache"]
