"""Compiled solves kept on disk under a key computed *before* tracing.

JAX's persistent compilation cache keys a program by its lowered XLA module, so a new
process must trace and lower the whole solve (0.35-0.6 s on the shared pose graphs) just to
find the program it already has on disk. This cache keys the serialized executable by what
decides the program without building it:

- what JAX's in-memory ``jit`` cache compares: the arguments' tree structure with its static
  data, every leaf's shape, dtype and weak type, and JAX's tracing configuration;
- the code that traces it: jaxgraph's own source files and the versions of Python, jax,
  jaxlib and numpy;
- the compile target: platform and its version, device kind and count, ``XLA_FLAGS`` and
  jaxgraph's compiler options.

Static data is written out by :func:`encode`, which knows a closed set of types exactly
(Python scalars and containers, enums, numpy dtypes, jaxgraph's dataclasses, classes and
functions of jaxgraph found again by import, objects of jaxgraph that follow the
:class:`CacheKeyed` protocol; a custom factor's residual by :func:`function_key`, its code and
constants). Anything else (a user's callback, variable kind or pytree type, a residual holding
an object that cannot be written out) makes the arguments :class:`Uncacheable`: such a solve
takes the normal path, JAX's own caches, instead of risking a key that misses part of the
program.

The cache lives in ``jaxgraph-executables/`` inside JAX's compilation cache folder and is on
when that cache is (:func:`jaxgraph.enable_compilation_cache`, the CLI by default) and the
backend is the CPU (the one where loading serialized programs is tested; elsewhere JAX's
cache alone serves).
Entries are pickles, as in ``jax.experimental.serialize_executable``: load only a folder you
trust, as with JAX's own cache. The folder is bounded as JAX's cache is, by
``jax_compilation_cache_max_size`` (set by :func:`jaxgraph.enable_compilation_cache`, 1 GiB
by default): storing an entry first deletes the least recently used ones (a file's
modification time is its last use; a hit touches it).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import functools
import hashlib
import importlib
import os
import pickle
import re
import sys
import tempfile
import threading
import types
import typing
import warnings
from pathlib import Path

import jax
import numpy as np

__all__ = ["CacheKeyed", "Uncacheable", "encode", "function_key", "directory", "disk_key", "lookup", "fresh_compile",
           "store", "max_size", "code_fingerprint"]

FOLDER = "jaxgraph-executables"
_FORMAT = 1  # bump when the entry layout changes


class Uncacheable(Exception):
    """The arguments hold static data :func:`encode` cannot write out exactly."""


class CacheKeyed(typing.Protocol):
    """Static data of jaxgraph that is neither a dataclass nor a plain container (a problem's
    size-class layout, index arrays, a product kind) defines ``_cache_key()``: static data that
    :func:`encode` can write out and that determines the object's ``__eq__``, so two objects
    with one key trace the same program."""

    def _cache_key(self): ...


def _owned(obj) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == "jaxgraph" or module.startswith("jaxgraph.")


def _importable_name(obj) -> str:
    """``module:qualname`` of a jaxgraph class or function that import finds again as ``obj``."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if not _owned(obj) or not qualname or "<" in qualname:
        raise Uncacheable(f"{obj!r} is not a module-level object of jaxgraph")
    found = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not obj:
        raise Uncacheable(f"{module}:{qualname} does not import back as {obj!r}")
    return f"{module}:{qualname}"


def _axis_env_is_empty(obj) -> bool:
    return (type(obj).__name__ == "AxisEnv" and type(obj).__module__ == "jax._src.core"
            and not obj.axis_sizes and not obj.spmd_axis_names and not obj.explicit_mesh_axis_names)


def encode(obj) -> str:
    """An exact, process-independent text form of static data ``obj`` (raises :class:`Uncacheable`)."""
    t = type(obj)
    if obj is None or t in (bool, int, str, bytes):
        return f"{t.__name__}:{obj!r}"
    if t is float:
        return f"float:{obj.hex()}"
    if t in (tuple, list):
        return f"{t.__name__}(" + ",".join(encode(x) for x in obj) + ")"
    if t is dict:
        return "dict(" + ",".join(sorted(f"{encode(k)}={encode(v)}" for k, v in obj.items())) + ")"
    if t is frozenset:
        return "frozenset(" + ",".join(sorted(encode(x) for x in obj)) + ")"
    if isinstance(obj, np.dtype):
        return f"dtype:{obj.str}"
    if isinstance(obj, enum.Enum):
        return f"enum:{t.__module__}.{t.__qualname__}.{obj.name}={encode(obj.value)}"
    if isinstance(obj, type) or callable(obj) and not _owned(t):
        # classes and functions (jaxgraph's own, by import name; anything else is user code)
        if isinstance(obj, type) and issubclass(obj, np.generic):
            return f"scalar-type:{np.dtype(obj).str}"
        return f"ref:{_importable_name(obj)}"
    if _owned(t) and hasattr(t, "_cache_key"):
        return f"{_importable_name(t)}{{{encode(obj._cache_key())}}}"
    if _owned(t) and dataclasses.is_dataclass(obj):
        fields = ",".join(f"{f.name}={encode(getattr(obj, f.name))}" for f in dataclasses.fields(obj) if f.compare)
        return f"{_importable_name(t)}({fields})"
    if _owned(t) and isinstance(obj, tuple) and hasattr(t, "_fields"):  # a jaxgraph NamedTuple
        return f"{_importable_name(t)}(" + ",".join(encode(x) for x in obj) + ")"
    if _axis_env_is_empty(obj):
        return "AxisEnv()"
    raise Uncacheable(f"cannot encode static data of type {t.__module__}.{t.__qualname__}")


# Modules whose code is part of every key already: jaxgraph's sources are hashed, and the
# versions of Python (its standard library), jax, jaxlib and numpy are in the key.
_VERSIONED = frozenset({"jax", "jaxlib", "numpy", "jaxgraph"})


def _versioned(module) -> bool:
    top = (module or "").split(".")[0]
    return top in _VERSIONED or top in sys.stdlib_module_names


def _imports_back(obj) -> bool:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qualname, str)) or "<" in qualname:
        return False
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return False
    return found is obj


def function_key(fn) -> str:
    """Hex digest of what user function ``fn`` traces to: its code (bytecode ``co_code``,
    constants with nested code objects, names, argument layout), module and qualified name,
    default arguments, closure cell contents and the globals its code names, each written out
    exactly: Python numbers, strings, bytes, containers of them, numpy and JAX arrays (dtype,
    shape, bytes), functions (recursively, the same way), ``functools.partial`` objects,
    modules and module-level objects of the standard library, jax, numpy and jaxgraph (by
    name: their versions or sources are in every key), and jaxgraph's static data
    (:func:`encode`). Raises :class:`Uncacheable` for anything else a closure or global
    holds (an object of a user class, a user module, a traced value, a jitted or
    ``custom_jvp`` function): such a function is not keyed, and its solves are not stored."""
    return hashlib.sha256(_FunctionKey().value(fn).encode()).hexdigest()


class _FunctionKey:
    def __init__(self):
        self.seen: dict = {}  # id(function) -> its number: recursion and shared helpers

    def value(self, obj) -> str:
        t = type(obj)
        if obj is None or t in (bool, int, float, str, bytes) or isinstance(obj, np.dtype):
            return encode(obj)
        if t is complex:
            return f"complex:{obj.real.hex()},{obj.imag.hex()}"
        if obj is Ellipsis:
            return "Ellipsis"
        if t in (tuple, list):
            return f"{t.__name__}(" + ",".join(self.value(x) for x in obj) + ")"
        if t in (set, frozenset):
            return "set(" + ",".join(sorted(self.value(x) for x in obj)) + ")"
        if t is dict:  # in key order, so that functions are numbered alike in every process
            items = sorted(((self.value(k), v) for k, v in obj.items()), key=lambda kv: kv[0])
            return "dict(" + ",".join(f"{k}={self.value(v)}" for k, v in items) + ")"
        if isinstance(obj, jax.core.Tracer):
            raise Uncacheable("a traced value")
        if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
            a = np.asarray(obj)
            if a.dtype.hasobject:
                raise Uncacheable("an array of Python objects")
            digest = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
            return f"array:{a.dtype.str}:{a.shape}:{digest}"
        if isinstance(obj, types.CodeType):
            return self.code(obj)
        if isinstance(obj, types.ModuleType):
            if _versioned(obj.__name__):
                return f"module:{obj.__name__}"
            raise Uncacheable(f"module {obj.__name__} (its code is not hashed)")
        if _versioned(getattr(obj, "__module__", None)) and _imports_back(obj):
            return f"ref:{obj.__module__}:{obj.__qualname__}"  # a library function or class
        if isinstance(obj, types.FunctionType):
            return self.function(obj)
        if isinstance(obj, functools.partial):
            return f"partial({self.value(obj.func)},{self.value(obj.args)},{self.value(obj.keywords)})"
        if _owned(t):
            try:
                return encode(obj)  # jaxgraph's static data
            except Uncacheable:
                return self.pytree(obj)  # a Problem, factor group or group element a closure holds
        raise Uncacheable(f"cannot key an object of type {t.__module__}.{t.__qualname__}")

    def pytree(self, obj) -> str:
        """A jaxgraph pytree (a problem, a factor group, a ``lie`` element) by its tree
        structure with static data (:func:`_encode_treedef`) and its leaves, each written out."""
        leaves, treedef = jax.tree_util.tree_flatten(obj)
        if treedef.num_nodes == 1:  # not a pytree node: nothing more to write out
            raise Uncacheable(f"cannot encode static data of type {type(obj).__module__}.{type(obj).__qualname__}")
        return f"pytree({_encode_treedef(treedef)};{self.value(leaves)})"

    def code(self, co) -> str:
        parts = (co.co_qualname, co.co_argcount, co.co_posonlyargcount, co.co_kwonlyargcount, co.co_flags,
                 co.co_code, co.co_exceptiontable, co.co_names, co.co_varnames, co.co_freevars, co.co_cellvars)
        return f"code({encode(parts)},{self.value(co.co_consts)})"

    def function(self, fn) -> str:
        if id(fn) in self.seen:
            return f"function#{self.seen[id(fn)]}"
        self.seen[id(fn)] = len(self.seen)
        names, stack = set(), [fn.__code__]
        while stack:  # every name of the code and of the code objects nested in it
            co = stack.pop()
            names.update(co.co_names)
            stack.extend(c for c in co.co_consts if isinstance(c, types.CodeType))
        scope = fn.__globals__
        used = {name: scope[name] for name in names if name in scope}
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # not yet assigned
                cells.append(Ellipsis)
        return "function(" + ",".join((
            encode((fn.__module__, fn.__qualname__)), self.code(fn.__code__), self.value(fn.__defaults__),
            self.value(fn.__kwdefaults__), self.value(tuple(cells)), self.value(used))) + ")"


def _encode_treedef(treedef) -> str:
    """Node types and static data of a pytree structure, depth first."""
    node = treedef.node_data()
    if node is None:  # a leaf
        return "*"
    typ, aux = node
    kind = typ.__name__ if typ in (tuple, list, dict, type(None)) else _importable_name(typ)
    children = ",".join(_encode_treedef(c) for c in treedef.children())
    return f"{kind}[{encode(aux)}]({children})"


_fingerprint: str | None = None


def code_fingerprint() -> str:
    """Hash of jaxgraph's source files and of the versions that shape a traced program."""
    global _fingerprint
    if _fingerprint is None:
        import jaxlib

        h = hashlib.sha256()
        root = Path(__file__).resolve().parents[1]  # the jaxgraph package
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        versions = (sys.version, jax.__version__, jaxlib.__version__, np.__version__)
        h.update(repr(versions).encode())
        _fingerprint = h.hexdigest()
    return _fingerprint


def directory() -> Path | None:
    """The cache folder, or None while JAX's persistent compilation cache is off."""
    if not jax.config.jax_enable_compilation_cache or not jax.config.jax_compilation_cache_dir:
        return None
    return _folder(jax.config.jax_compilation_cache_dir)


@functools.lru_cache(maxsize=8)
def _folder(cache_dir: str) -> Path:
    return Path(cache_dir) / FOLDER  # (asked on every top-level solve call)


def disk_key(name: str, treedef, avals, trace_context, compiler_options) -> str:
    """Hex key of entry point ``name`` called with arguments of structure ``treedef`` and
    leaf types ``avals`` ((shape, dtype, weak_type) each); raises :class:`Uncacheable`."""
    backend = jax.devices()[0].client
    target = (backend.platform, backend.platform_version, jax.devices()[0].device_kind, jax.device_count(),
              os.environ.get("XLA_FLAGS", ""))
    parts = (
        f"format {_FORMAT}",
        f"code {code_fingerprint()}",
        f"entry {name}",
        f"target {target!r}",
        f"options {encode(dict(compiler_options))}",
        f"trace-context {encode(tuple(trace_context))}",
        f"tree {_encode_treedef(treedef)}",
        "leaves " + ";".join(f"{shape}:{np.dtype(dtype).str}:{int(weak)}" for shape, dtype, weak in avals),
    )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def lookup(key: str, in_tree):
    """The :class:`jax.stages.Compiled` stored under ``key`` for arguments ``in_tree``, or None."""
    folder = directory()
    if folder is None:
        return None
    path = folder / f"{key}.pkl"
    try:
        with open(path, "rb") as f:
            fmt, payload, out_tree, targets = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a truncated or foreign file: compile again and overwrite it
        warnings.warn(f"jaxgraph: ignoring unreadable cached executable {path}: {exc}", RuntimeWarning, stacklevel=3)
        return None
    if fmt != _FORMAT:
        return None
    _touch(path)
    from jax.experimental import serialize_executable

    try:
        # The runtime set-up (importing scipy's LAPACK for jaxlib, 0.3 s) runs beside the
        # deserialization (0.25 s, XLA without the GIL); both are done before the program runs.
        ready = _background(_prepare_runtime, targets)
        # compiled for one device (entry_point keys only arguments on the default device)
        compiled = serialize_executable.deserialize_and_load(payload, in_tree, out_tree,
                                                             execution_devices=jax.devices()[:1])
        ready()
        return compiled
    except Exception as exc:
        warnings.warn(f"jaxgraph: cannot load cached executable {path}: {exc}", RuntimeWarning, stacklevel=3)
        return None


_jax_cache_hits = collections.Counter()  # per thread: a compile in the background is watched alone


def _count_jax_cache_hit(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":  # JAX reports it in the compiling thread
        _jax_cache_hits[threading.get_ident()] += 1


jax.monitoring.register_event_listener(_count_jax_cache_hit)


@contextlib.contextmanager
def fresh_compile():
    """Compile without writing to JAX's persistent cache; yields a list that holds True
    afterwards when XLA really compiled (JAX's cache had no copy to load).

    Only a freshly compiled executable may be stored here: XLA:CPU serializes one that was
    itself loaded from JAX's cache without part of its code (loading that copy fails with
    "Function ... not found"). Keeping these programs out of JAX's cache makes the fresh
    compile the rule; a copy an older jaxgraph left there is detected and not stored.
    """
    from jax._src import config as jax_config

    fresh, me = [False], threading.get_ident()
    hits = _jax_cache_hits[me]
    with jax_config.persistent_cache_min_compile_time_secs(float("inf")):
        yield fresh
    fresh[0] = _jax_cache_hits[me] == hits


def _custom_calls(compiled) -> set:
    """Names of the custom-call targets in a compiled program."""
    return set(re.findall(r'custom_call_target="([^"]+)"', compiled.as_text()))


def _runtime_ready(targets) -> bool:
    """Whether a loaded program's custom calls work without the lowering that normally
    precedes them: jaxgraph's own targets (registered when jaxgraph is imported) and jaxlib's
    LAPACK kernels (see :func:`_prepare_runtime`). Programs with any other target are not
    stored: their set-up is unknown here."""
    return all(t.startswith(("jaxgraph_", "lapack_")) for t in targets)


def _background(fn, *args):
    """Start ``fn(*args)`` in a thread; the returned function waits for it (and raises what it raised)."""
    result = []

    def run():
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 (re-raised by the caller's wait)
            result.append(exc)

    thread = threading.Thread(target=run, name="jaxgraph-prepare-runtime", daemon=True)
    thread.start()

    def wait():
        thread.join()
        if result:
            raise result[0]

    return wait


def _prepare_runtime(targets) -> None:
    """Set up what JAX otherwise sets up while lowering: jaxlib's LAPACK kernels (dense
    Cholesky, triangular solves) get their LAPACK function pointers on first use in a
    lowering rule, and an executable that calls them before that crashes the process."""
    if any(t.startswith("lapack_") for t in targets):
        from jax._src.lax import linalg

        linalg.initialize_lapack()


def _touch(path: Path) -> None:
    """Mark an entry as just used (its modification time orders eviction)."""
    try:
        os.utime(path)
    except OSError:  # evicted meanwhile by another process, or a read-only folder
        pass


def max_size() -> int:
    """Bound of the folder in bytes (``jax_compilation_cache_max_size``; -1: none)."""
    return int(jax.config.jax_compilation_cache_max_size)


def _make_room(folder: Path, incoming: int, limit: int) -> bool:
    """Delete least recently used entries until ``incoming`` more bytes fit under ``limit``;
    False when the entry alone exceeds it. Other processes may evict or store at the same
    time: a file that vanished is simply not counted, and the bound holds up to such races."""
    if limit < 0:
        return True
    if incoming > limit:
        return False
    entries = []
    for path in folder.glob("*.pkl"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        entries.append((st.st_mtime_ns, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries, key=lambda e: e[0]):
        if total + incoming <= limit:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        total -= size
    return True


def store(key: str, compiled) -> bool:
    """Write ``compiled`` under ``key`` (atomically, evicting old entries beyond
    :func:`max_size`); False when it cannot be serialized or written, or exceeds the bound alone."""
    folder = directory()
    if folder is None:
        return False
    from jax.experimental import serialize_executable

    targets = _custom_calls(compiled)
    if not _runtime_ready(targets):
        return False
    try:
        payload, _, out_tree = serialize_executable.serialize(compiled)
        data = pickle.dumps((_FORMAT, payload, out_tree, sorted(targets)), protocol=pickle.HIGHEST_PROTOCOL)
        folder.mkdir(parents=True, exist_ok=True)
        if not _make_room(folder, len(data), max_size()):
            # as JAX's own cache does for an entry over its bound: said, not silently skipped
            warnings.warn(f"jaxgraph: compiled solve of {len(data)} bytes not cached: it exceeds the cache bound "
                          f"jax_compilation_cache_max_size = {max_size()} bytes", RuntimeWarning, stacklevel=3)
            return False
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, folder / f"{key}.pkl")  # readers see the whole entry or none
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return True
    except (OSError, ValueError, NotImplementedError, pickle.PicklingError, TypeError):
        # an unwritable folder or a program JAX cannot serialize: it simply is not cached
        return False
