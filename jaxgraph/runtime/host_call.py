"""Python functions as named XLA:CPU custom-call targets: host calls that can be cached.

``jax.pure_callback`` and ``jax.debug.callback`` put a Python object into the compiled
program, and JAX never writes such a program to its persistent compilation cache (nor can
it be serialised), so every new process compiled a solve again (2-5 s), even for a graph of
a size class it had compiled before. A custom call names its target instead; the name is
resolved when the program is loaded, so a cached program works in any process that has
registered the target (jaxgraph registers its targets at import). The function pointer XLA
calls is made by ``ctypes`` around a Python function, so no compiled extension ships with
the package. XLA:CPU's status-returning legacy signature is used:
``void f(void** out, const void** in, const char* opaque, size_t opaque_len, XlaCustomCallStatus*)``
(``out`` is the result buffer for one result, an array of buffer addresses for several).
"""

from __future__ import annotations

import ctypes
import warnings
from typing import Callable, Sequence

import jax
import numpy as np

__all__ = ["register", "buffer", "call"]

_SIGNATURE = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p
)
_targets: dict = {}  # name -> ctypes function object (kept alive for the life of the process)


def register(name: str, fn: Callable[[Sequence[int], Sequence[int], str], None]) -> None:
    """Make ``fn(outputs, inputs, opaque)`` the CPU custom-call target ``name`` (once).

    ``outputs``/``inputs`` index to buffer addresses (see :func:`buffer`); ``opaque`` is the
    string given to :func:`call`. ``fn`` must write every output. An exception cannot cross
    into XLA: it is reported as a ``RuntimeWarning`` naming the target, so ``fn`` should
    first write outputs that mark the failure (NaN) for the caller's status.
    """
    if name in _targets:
        return

    def entry(out, ins, opaque, opaque_len, status):
        try:
            count, text = opaque[:opaque_len].decode().split(";", 1)
            outs = [out] if count == "1" else ctypes.cast(out, ctypes.POINTER(ctypes.c_void_p))
            fn(outs, ins, text)
        except Exception as e:  # noqa: BLE001 - see the docstring
            warnings.warn(f"jaxgraph host call {name!r} failed: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=1)

    c_fn = _SIGNATURE(entry)
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype = ctypes.py_object
    new_capsule.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
    capsule = new_capsule(ctypes.cast(c_fn, ctypes.c_void_p).value, b"xla._CUSTOM_CALL_TARGET", None)
    jax.ffi.register_ffi_target(name, capsule, platform="cpu", api_version=0)
    _targets[name] = c_fn


def buffer(address: int | None, dtype, shape) -> np.ndarray:
    """The ``shape``/``dtype`` array at ``address`` (an XLA buffer), without copying."""
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0 or not address:
        return np.zeros(shape, dtype)
    raw = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(address)
    return np.frombuffer(raw, dtype).reshape(shape)


def call(name: str, results: Sequence[jax.ShapeDtypeStruct], *args, opaque: str, has_side_effect: bool = False):
    """Call target ``name`` on ``args`` (traceable; under ``vmap`` once per batch element).

    Returns a tuple with one array per entry of ``results``.
    """
    return jax.ffi.ffi_call(
        name,
        tuple(results),
        custom_call_api_version=3,
        legacy_backend_config=f"{len(results)};{opaque}",
        has_side_effect=has_side_effect,
        vmap_method="sequential",
    )(*args)
