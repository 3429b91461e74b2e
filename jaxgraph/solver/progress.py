"""The solver's per-trial ``callback`` as a named host call (see :mod:`jaxgraph.runtime.host_call`).

A ``jax.debug.callback`` would keep every solve with a callback (the CLI's progress lines)
out of JAX's persistent compilation cache. Instead the program calls the target
``jaxgraph_progress`` with a key naming the function: ``module:qualname`` when the
function can be found again by import (the same key, hence the same cached program, in
every process), else a key private to this process (such programs compile again in a new
process, as they must: the function exists only here).
"""

from __future__ import annotations

import importlib
import secrets
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..runtime import host_call

__all__ = ["report"]

_TARGET = "jaxgraph_progress"
_TOKEN = secrets.token_hex(8)  # never equal in two processes
_local: dict = {}  # private key -> function


def _resolve(key: str):
    module, qualname = key.split(":", 1)
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _key(fn: Callable) -> str:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module and qualname and "<" not in qualname:
        key = f"{module}:{qualname}"
        try:
            if _resolve(key) is fn:
                return key
        except (ImportError, AttributeError):
            pass
    key = f"local:{_TOKEN}:{id(fn)}"
    _local[key] = fn
    return key


def _host(outs, ins, opaque):
    dtype, key = opaque.split("|", 1)
    if bool(host_call.buffer(ins[0], np.bool_, ())):  # trip 0: nothing judged yet
        return
    fn = _local[key] if key.startswith("local:") else _resolve(key)
    it = host_call.buffer(ins[1], np.int32, ()).copy()
    cost, damping, step = (host_call.buffer(ins[k], dtype, ()).copy() for k in (2, 3, 4))
    fn(it, cost, damping, step, host_call.buffer(ins[5], np.bool_, ()).copy())


host_call.register(_TARGET, _host)


def report(fn: Callable, first, iteration, cost, damping, step_norm, accepted) -> None:
    """Call ``fn(iteration, cost, damping, step_norm, accepted)`` from the compiled loop
    unless ``first`` (traceable). Reverse-mode differentiation drops the call (its result
    is not used); on backends other than the CPU it is a ``jax.debug.callback``."""
    dtype = jnp.result_type(cost)
    floats = [jax.lax.stop_gradient(jnp.asarray(x).astype(dtype)) for x in (cost, damping, step_norm)]
    if jax.default_backend() != "cpu":
        jax.debug.callback(lambda f, *a: None if bool(f) else fn(*a), first, iteration, *floats, accepted)
        return
    args = [jnp.asarray(first, bool), jnp.asarray(iteration, jnp.int32), *floats, jnp.asarray(accepted, bool)]
    host_call.call(_TARGET, [], *args, opaque=f"{jnp.dtype(dtype).name}|{_key(fn)}", has_side_effect=True)
