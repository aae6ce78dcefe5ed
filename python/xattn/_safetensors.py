"""load_safetensors and save_safetensors: check types, convert, call the binding.

The file format and every check on its content live in the C++ library (xattn/safetensors.h);
its ValueError (xattn.Error) names the file and what is wrong.
"""

import os

import numpy as np

from . import _arrays as A
from . import _xattn

_FRAMEWORKS = (A.NUMPY, A.TORCH)


def _path(path, arg="path"):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{arg}: expected a str or os.PathLike, got {type(path).__name__}") from None
    if not isinstance(path, str):
        raise TypeError(f"{arg}: expected a str path, got {type(path).__name__}")
    return path


def _bf16_bits_to_float32(bits):
    # bfloat16 is the top half of a float32, so widening is exact.
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _to_torch(dtype, array):
    import torch

    # A copy: torch tensors cannot be read-only, and an in-place write into the read-only
    # mapping would crash the process instead of raising.
    if dtype == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


def load_safetensors(path, framework="numpy", with_metadata=False):
    """Reads a .safetensors file into a dict name -> array, in the order of the file's data.

    framework="numpy": float32, float16 and bool tensors are read-only numpy arrays that view the
    memory-mapped file without copying (the mapping stays open while any of them lives); bfloat16
    tensors come back as float32 copies, since numpy has no bfloat16.
    framework="torch": CPU torch tensors of the file's dtypes (bfloat16 included), all copies.

    with_metadata=True returns (tensors, metadata), metadata being the file's "__metadata__"
    string dict ({} when absent). A malformed file, or a tensor of a dtype xattn does not
    support (only F32, F16, BF16 and BOOL are), raises xattn.Error naming the file.
    """
    path = _path(path)
    if not isinstance(framework, str):
        raise TypeError(f"framework: expected 'numpy' or 'torch', got {type(framework).__name__}")
    if framework not in _FRAMEWORKS:
        raise ValueError(f"framework: expected 'numpy' or 'torch', got {framework!r}")
    with_metadata = A.check_bool(with_metadata, "with_metadata")
    file = _xattn.SafetensorsFile(path)
    tensors = {}
    for name in file.names():
        dtype, array = file.array(name)
        if framework == A.TORCH:
            tensors[name] = _to_torch(dtype, array)
        elif dtype == "bfloat16":
            tensors[name] = _bf16_bits_to_float32(array)
        else:
            tensors[name] = array
    return (tensors, file.metadata()) if with_metadata else tensors


def save_safetensors(path, tensors, metadata=None):
    """Writes a dict name -> array (numpy arrays and CPU torch tensors of float32, float16,
    bfloat16 (torch) or bool; rank <= 4; any strides) as a .safetensors file.

    metadata: an optional dict of str -> str stored as "__metadata__". The file is written to a
    temporary beside `path` and renamed into place, so `path` is never left half-written. Tensors
    are stored by descending element size (in the dict's order within a size), which keeps each
    one aligned for zero-copy readers. Wrong types raise TypeError naming the argument.
    """
    path = _path(path)
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors: expected a dict of name -> array, got {type(tensors).__name__}")
    items = []
    for name, x in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensors: keys must be str, got {type(name).__name__} {name!r}")
        arg = f"tensors[{name!r}]"
        A.kind_of(x, arg)
        A.check_dtype(x, arg, A.MASK_DTYPES)
        items.append((name, A.spec(x, arg)))
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata: expected a dict of str -> str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata: keys and values must be str, got {type(key).__name__} -> "
                            f"{type(value).__name__} for {key!r}")
    _xattn.save_safetensors(path, items, metadata)
