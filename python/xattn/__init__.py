"""xattn: fused cross-attention on the CPU.

One kernel computes softmax(scale * q @ k^T + mask) @ v in a single pass with float32 accumulation,
for numpy arrays and CPU torch tensors (torch is optional), read in place whatever their strides.

    out = xattn.attention(q, k, v, causal=True)                # [B, H, L, D] arrays or tensors
    out = xattn.scaled_dot_product_attention(q, k, v)         # torch's function, drop-in
    text = xattn.transcribe("speech.wav")                      # the speech recogniser

Invalid shapes raise ValueError (xattn.Error), wrong types TypeError.
"""

from . import _xattn
from ._attention import attention, attention_varlen, merge
from ._criss_cross import criss_cross_attention
from ._sdpa import scaled_dot_product_attention
from ._transcribe import transcribe
from ._safetensors import load_safetensors, save_safetensors
from . import audio, nn

Error = _xattn.Error
Error.__doc__ = """Invalid arguments (shapes, lengths, options); a ValueError whose message names the
argument, e.g. "k: dim 3 (D) must equal q's D = 64, got 32". Raised before anything is written."""


def version():
    """The library version, e.g. "0.1.0"."""
    return _xattn.version()


def simd_target():
    """The SIMD target the kernels dispatch to now, e.g. "AVX3_DL" or "AVX2"."""
    return _xattn.simd_target()


def bf16_dot_products():
    """Whether bfloat16 inputs use AVX-512 BF16 dot products on the target in use: where the
    CPU and the target have them and they outrun f32 FMAs on this CPU (AMD Zen 4 and Zen 5; not
    Intel's Xeons). bf16_dot_reason() says why."""
    return _xattn.bf16_dot_products()


def bf16_dot_reason():
    """Why bf16_dot_products() says what it says."""
    return _xattn.bf16_dot_reason()


def force_bf16_dot_products(mode):
    """Force AVX-512 BF16 dot products 'on' (where the CPU and target have them), 'off', or back
    to the CPU's choice, 'auto'. For tests and benchmarks; call it between computations."""
    if not isinstance(mode, str):
        raise TypeError(f"mode: must be a str, 'auto', 'on' or 'off', got {type(mode).__name__}")
    _xattn.force_bf16_dot_products(mode)


def cpu_name():
    """The CPU the kernels' choices were made for, e.g. 'AMD Zen 4'."""
    return _xattn.cpu_name()


def kernel_tiles():
    """The tile shapes and register blocks of the SIMD target in use, in words."""
    return _xattn.kernel_tiles()


def available_simd_targets():
    """The SIMD targets compiled in that this CPU can run, best first."""
    return _xattn.available_simd_targets()


def force_simd_target(name):
    """Restricts dispatch to one target from available_simd_targets(); "" restores the default.

    For tests and benchmarks. Not thread-safe: call it between computations. An unknown name
    raises ValueError.
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    _xattn.force_simd_target(name)


def blas_kernels():
    """The kernels OpenBLAS chose for this CPU (the layers' matrix products), e.g. "SkylakeX".
    "Prescott", its SSE3 kernels, on a CPU with AVX-512 means an OpenBLAS older than the CPU:
    OPENBLAS_CORETYPE=SkylakeX in the environment of a new process selects the AVX-512 ones."""
    return _xattn.blas_kernels()


def default_num_threads():
    """The number of threads a call with num_threads=0 uses."""
    return _xattn.default_num_threads()


__version__ = version()
__all__ = ["attention", "attention_varlen", "merge", "criss_cross_attention",
           "scaled_dot_product_attention", "transcribe", "version",
           "simd_target", "bf16_dot_products", "bf16_dot_reason", "force_bf16_dot_products",
           "cpu_name", "kernel_tiles", "available_simd_targets", "force_simd_target",
           "default_num_threads", "blas_kernels",
           "load_safetensors", "save_safetensors", "Error"]
