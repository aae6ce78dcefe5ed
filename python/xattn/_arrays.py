"""Adapters between user arrays (numpy arrays, CPU torch tensors) and the binding.

The binding takes each array as a tuple (address, dtype name, shape, strides in elements) and never
copies; these helpers build such tuples, allocate outputs of the caller's kind, and turn wrong
types into TypeError naming the argument.
"""

import math
import operator
import os
import sys

import numpy as np

from . import _xattn

NUMPY = "numpy"
TORCH = "torch"

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
MASK_DTYPES = FLOAT_DTYPES + ("bool",)

# An address for zero-size arrays: torch reports data_ptr() == 0 for them, which the C++ API
# reads as "argument absent". Nothing is read through it, so any valid address will do.
_EMPTY = np.zeros(8, dtype=np.float32)


def _torch():
    # torch is optional and slow to import: a torch tensor can only exist if torch was imported.
    return sys.modules.get("torch")


def kind_of(x, arg):
    """NUMPY or TORCH; TypeError for anything else (lists, scalars, CUDA tensors)."""
    if isinstance(x, np.ndarray):
        return NUMPY
    torch = _torch()
    if torch is not None and isinstance(x, torch.Tensor):
        if x.device.type != "cpu":
            raise TypeError(f"{arg}: tensor is on device '{x.device}'; xattn runs on the CPU only")
        if x.layout != torch.strided:
            raise TypeError(f"{arg}: only strided (dense) tensors are supported, got {x.layout}")
        return TORCH
    raise TypeError(f"{arg}: expected a numpy array or a CPU torch tensor, got {type(x).__name__}")


def dtype_name(x):
    """The binding's name for x's dtype, or None when xattn has no such dtype."""
    if isinstance(x, np.ndarray):
        if not x.dtype.isnative:  # byte-swapped data would be read as garbage
            return None
        return {"float32": "float32", "float16": "float16", "bool": "bool"}.get(x.dtype.name)
    torch = _torch()
    names = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
             torch.bool: "bool"}
    return names.get(x.dtype)


def check_dtype(x, arg, allowed):
    name = dtype_name(x)
    if name not in allowed:
        raise TypeError(f"{arg}: dtype {x.dtype} is not supported (expected one of "
                        f"{', '.join(allowed)})")
    return name


def spec(x, arg):
    """(address, dtype, shape, strides) of x, without copying. x must already be type-checked."""
    name = dtype_name(x)
    shape = list(x.shape)
    if isinstance(x, np.ndarray):
        address = x.__array_interface__["data"][0]  # element [0, ..., 0], even with negative strides
        itemsize = x.itemsize
        if any(s % itemsize for s in x.strides) or not x.flags.aligned:
            raise ValueError(f"{arg}: strides {x.strides} (bytes) or its address are not multiples "
                             f"of the item size {itemsize}; make it contiguous first")
        strides = [s // itemsize for s in x.strides]
    else:
        address = x.data_ptr()
        strides = list(x.stride())
    if address == 0 and 0 in shape:
        address = _EMPTY.__array_interface__["data"][0]
    return (address, name, shape, strides)


def optional_spec(x, arg):
    return None if x is None else spec(x, arg)


def _physical_memory():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


_PHYSICAL_MEMORY = _physical_memory()


def _bytes_text(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024


def check_fits(kind, shape, dtype):
    """xattn.Error (a ValueError) when an output of this shape could never fit in the machine's
    memory, as the library refuses its own buffers (core::check_memory): before allocating,
    rather than left to the allocator (MemoryError, RuntimeError or, with overcommit, the OOM
    killer)."""
    itemsize = (np.dtype(dtype).itemsize if kind == NUMPY
                else _torch().empty((), dtype=dtype).element_size())
    need = math.prod(shape) * itemsize
    if _PHYSICAL_MEMORY is not None and need > _PHYSICAL_MEMORY:
        raise _xattn.Error(f"an output of shape {tuple(shape)}: needs {_bytes_text(need)}, more "
                           f"than this machine's {_bytes_text(_PHYSICAL_MEMORY)} of memory")


def empty(kind, shape, dtype):
    """An uninitialised output of the given kind; dtype is a numpy or torch dtype of that kind."""
    check_fits(kind, shape, dtype)
    if kind == NUMPY:
        return np.empty(shape, dtype=dtype)
    return _torch().empty(shape, dtype=dtype)


def check_bool(x, arg):
    """x as a bool; TypeError naming arg for anything else (no truthiness: "no" is not False)."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{arg}: expected a bool, got {type(x).__name__}")
    return bool(x)


def check_int_range(value, arg, bits=64):
    """value, or ValueError naming arg unless it fits a signed C integer of `bits` bits."""
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise ValueError(f"{arg}: {value} is out of range for a {bits}-bit integer")
    return value


def float32(kind):
    return np.float32 if kind == NUMPY else _torch().float32


def unsqueeze(x, dim):
    """A view of x with a size-1 dim inserted at `dim`."""
    return np.expand_dims(x, dim) if isinstance(x, np.ndarray) else x.unsqueeze(dim)


def squeeze(x, dim):
    """A view of x without its size-1 dim `dim`."""
    return x.squeeze(dim) if x is not None else None


def int_list(value, arg):
    """A list of Python ints from a sequence of ints or a 1-D integer array / tensor."""
    if value is None:
        return []
    torch = _torch()
    if isinstance(value, np.ndarray) or (torch is not None and isinstance(value, torch.Tensor)):
        if isinstance(value, np.ndarray):
            is_int = value.dtype.kind in "iu"
        else:
            is_int = not (value.dtype.is_floating_point or value.dtype.is_complex
                          or value.dtype == torch.bool)
        if not is_int:
            raise TypeError(f"{arg}: expected integers, got an array of {value.dtype}")
        if value.ndim != 1:
            raise ValueError(f"{arg}: expected a 1-D array, got shape {tuple(value.shape)}")
        value = value.tolist()
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{arg}: expected a sequence of ints, got {type(value).__name__}")
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{arg}: expected a sequence of ints, got {type(value).__name__}") from None
    result = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"{arg}: expected ints, got a bool")
        try:
            result.append(check_int_range(operator.index(item), arg))
        except TypeError:
            raise TypeError(f"{arg}: expected ints, got {type(item).__name__}") from None
    return result
