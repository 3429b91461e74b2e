"""JAX's persistent compilation cache, turned on for jaxgraph programs.

A solve compiles one XLA program per problem structure (seconds). With the persistent cache,
a program compiled once is read back from disk by every later process that compiles the same
program, so a second run on the same graph (or a graph of the same structure) skips XLA.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from pathlib import Path

import jax
import numpy as np

__all__ = ["enable_compilation_cache", "default_cache_dir", "default_max_size", "DEFAULT_MAX_SIZE_BYTES",
           "COMPILER_OPTIONS", "SMALL_OPTIONS", "QUICK_OPTIONS", "UNOPTIMISED_OPTIONS", "entry_point", "jit",
           "set_tiered_compilation"]

# XLA options of jaxgraph's compiled entry points. XLA:CPU's MLIR fusion emitters spend
# about twice as long in LLVM on the solver's many small elementwise fusions (Lie-group
# maps, Jacobians) as the classic emitters, for the same run time (sphere2500
# linearisation: 4.4 s -> 2.5 s of compile CPU time, 33 vs 35 ms per call). The option is
# an XLA:CPU debug option; other platforms ignore it. JAX accepts it on top-level jits only:
# see entry_point.
COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def _top_level() -> bool:
    """True outside any JAX transformation (where ``compiler_options`` are allowed)."""
    try:
        from jax._src.core import trace_state_clean
    except ImportError:  # pragma: no cover - a JAX without it: never pass options
        return False
    return trace_state_clean()


# XLA options of a small program (entry_point's ``small``): a solve of a few hundred unknowns
# runs hundreds of kernels of a few microseconds each, and XLA:CPU's hand-offs to its thread
# pool cost more than the work they share: the Eigen dots run in the calling thread, and the
# small reductions stay XLA loops instead of YNNPACK fusions (known_landmark_localization_20:
# 0.72-0.83 -> 0.59-0.62 ms a solve on the quiet 2-core machine, alternated). An option the
# running XLA does not know is left out (see _compile).
SMALL_OPTIONS = {**COMPILER_OPTIONS, "xla_cpu_multi_thread_eigen": False, "xla_cpu_experimental_ynn_fusion_type": ""}

# XLA's backend optimisation level of the first program of a small problem (see
# entry_point's ``small``): level 0 skips LLVM's optimisation passes, which take most
# of a small solve's compile (known_landmark_localization_20: 3.5 s of XLA time at the
# default level, 1.3 s at level 0) for a program about 6x slower per call (1.1 -> 6.6 ms).
QUICK_OPTIONS = {**SMALL_OPTIONS, "xla_backend_optimization_level": 0}

# XLA options of programs whose time goes into custom calls and LAPACK (sparse
# factorisations), not into XLA's own kernels (entry_point's ``compiler_options``): GNC's
# weighted solves and flip scores. LLVM's optimisation passes are most of their compile and
# save little of their run (intel GNC: XLA 4.1-4.5 -> 2.1 s, run 0.03 -> 0.08 s; sphere2500
# GNC: 9.0 -> 3.8 s, run 16-19 -> 20-22 s: a cell of a sweep, a new program each, is faster).
UNOPTIMISED_OPTIONS = {**COMPILER_OPTIONS, "xla_backend_optimization_level": 0}

# Options this process's XLA rejected ("No such compile option"; an older jaxlib), left out
# of every later compile.
_UNKNOWN_OPTIONS: set = set()


def _compile(lowered, options: dict):
    """``lowered.compile(options)`` without the options this XLA does not know."""
    while True:
        known = {k: v for k, v in options.items() if k not in _UNKNOWN_OPTIONS}
        try:
            return lowered.compile(compiler_options=known)
        except Exception as e:  # noqa: BLE001 - only an unknown option is retried, anything else raised
            unknown = [k for k in known if k not in COMPILER_OPTIONS and f"'{k}'" in str(e)]
            if "No such compile option" not in str(e) or not unknown:
                raise
            _UNKNOWN_OPTIONS.update(unknown)


# Whether small programs (entry_point's ``small``) compile in two tiers (see set_tiered_compilation);
# the environment variable JAXGRAPH_TIERED_COMPILATION=0 turns them off for a whole process.
_TIERED = [os.environ.get("JAXGRAPH_TIERED_COMPILATION", "1").strip() not in ("0", "false", "no", "off")]
# Background compiles at once: one core stays for the caller (many first calls in a row would
# otherwise start as many compiles as programs, each a few hundred MB).
_BACKGROUND = threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) - 1))


def set_tiered_compilation(enabled: bool) -> None:
    """Turn two-tier compilation of small solves on (the default) or off.

    On: the first call of a small problem's program (at most
    :data:`jaxgraph.linear.DENSE_MAX_UNKNOWNS` scalar unknowns, on the CPU, not already in the
    executable cache) runs a copy compiled without LLVM's optimisation passes, while the
    optimised program compiles in a background thread; every later call runs the optimised
    one (the second call waits for it if needed), and only it is written to the executable
    cache. Which program runs therefore depends only on the call's place in the process,
    never on timing. The first call's result may differ from later ones in the last bits,
    as results of any two compilations of one computation may. Off: every program is
    compiled optimised before its first call, as a plain ``jax.jit`` does. The environment
    variable ``JAXGRAPH_TIERED_COMPILATION=0`` turns it off from the start (where many
    processes share the cores, the quick copy is extra work: the test suite does this).
    """
    _TIERED[0] = bool(enabled)


class _Upgrade:
    """A quick program for the first call while the optimised one compiles in a background
    thread.

    The thread is not a daemon: an exiting interpreter waits for it (at most one compile),
    instead of tearing XLA down under a running compile."""

    def __init__(self, quick, compile_full, on_done):
        self.quick, self.full, self.error = quick, None, None
        self._first = True
        self._on_done = on_done
        self._thread = threading.Thread(target=self._run, args=(compile_full,), name="jaxgraph-compile")
        self._thread.start()

    def _run(self, compile_full):
        try:
            with _BACKGROUND:
                self.full = compile_full()
        except Exception as e:  # noqa: BLE001 - reported on the next call, the quick program stays
            self.error = e
        self._on_done(self)

    def take(self):
        """The program for a call: the quick one for the first call, the optimised one for
        every later call (waiting for its compile)."""
        if self._first:
            self._first = False
            return self.quick
        return self.result()

    def result(self):
        """The optimised program, waiting for it (the quick one if its compile failed)."""
        self._thread.join()
        return self.full if self.full is not None else self.quick


class entry_point:
    """``jax.jit(fn, **jit_kwargs)`` compiled with :data:`COMPILER_OPTIONS` when called at
    the top level; inside a user's transformation (``jit``, ``vmap``, ``grad``), where JAX
    refuses per-call compiler options, the plain ``jax.jit(fn)`` is used (the enclosing
    program decides the options).

    ``executable_cache=True`` (no static arguments allowed): while the persistent cache is
    on, top-level calls on the CPU also keep the compiled program in
    :mod:`jaxgraph.runtime.executable_cache`, keyed before tracing, so a new process loads it without
    tracing or lowering ``fn``.

    ``small`` (a predicate of the call's arguments; needs ``executable_cache=True``): where it
    holds, on the CPU, the program is a small one: compiled with :data:`SMALL_OPTIONS` (its
    kernels run in the calling thread), and with tiered compilation on
    (:func:`set_tiered_compilation`) in two tiers: the first top-level call compiles it with
    :data:`QUICK_OPTIONS` and runs that copy while the optimised one compiles in a background
    thread; later calls run the optimised one, the second waiting for it if needed. For
    problems whose solve takes milliseconds, where compiling is nearly all of the first call.
    :meth:`compile` returns the optimised program and never compiles a quick one.

    ``by_identity=True`` (with ``executable_cache=True``): calls find their program by the
    identity of their arguments that are neither arrays nor dicts of arrays (see
    ``_call_program``); for arguments that are never changed in place, as the solver's problem
    and configuration.

    ``compiler_options`` (default :data:`COMPILER_OPTIONS`): the top-level programs' XLA
    options, e.g. :data:`UNOPTIMISED_OPTIONS` for a program whose time goes into custom calls;
    part of the executable cache's key. Not with ``small`` (small programs have their own).
    """

    def __init__(self, fn, *, executable_cache: bool = False, user_code: bool = False, small=None,
                 by_identity: bool = False, compiler_options: dict = COMPILER_OPTIONS, **jit_kwargs):
        if executable_cache and jit_kwargs:
            raise ValueError("entry_point: executable_cache takes no jit arguments (static arguments are not keyed)")
        if small is not None and not executable_cache:
            raise ValueError("entry_point: small needs executable_cache=True (its programs are kept per key)")
        if small is not None and compiler_options != COMPILER_OPTIONS:
            raise ValueError("entry_point: small programs have their own options (SMALL_OPTIONS)")
        self._options = dict(compiler_options)
        self.top = jax.jit(fn, compiler_options=self._options, **jit_kwargs)
        self.nested = jax.jit(fn, **jit_kwargs)
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self._name = f"{getattr(fn, '__module__', None)}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"
        # in-process programs: key -> Compiled | _Upgrade | None (None: leave the call to jit)
        self._executables = {} if executable_cache else None
        # the same program again for the same objects (see _call_program): token -> (refs, program);
        # only where the arguments that are not arrays are objects nobody changes in place
        self._by_identity = by_identity
        self._recent = {}
        self._small = small
        # user code is not in jaxgraph's source hash: its key names what it traces to
        # (executable_cache.function_key), computed at the first top-level call; False: not keyable
        self._user_code = user_code
        self._fn_key = None

    def __call__(self, *args, **kwargs):
        if not _top_level():
            return self.nested(*args, **kwargs)
        program = None
        if self._executables is not None and not kwargs:
            program = self._call_program(args) if self._by_identity else self._program(args, quick_ok=True)
        if isinstance(program, _Upgrade):
            program = program.take()
        return (self.top if program is None else program)(*args, **kwargs)

    def _call_program(self, args):
        """:meth:`_program` for a call, first from a memo of recent calls keyed by the identity
        of the arguments that are neither dicts nor arrays (a problem, a configuration) and by
        the types and placement of the others (``by_identity=True``: for the solver's problem and
        configuration, never for a user's containers): a repeated small solve skips flattening its
        problem and hashing 30 leaf types (about 35 us of a 0.7 ms solve, twice that after the
        program has run). A stale entry (an object changed in place) cannot run silently: a
        compiled program checks its arguments' structure and types on every call."""
        from jax._src import config as jax_config

        from . import executable_cache as xc

        token, objects = [jax_config.trace_context(), xc.directory() is not None], []
        for x in args:
            if isinstance(x, jax.Array):
                token.append((x.shape, x.dtype, x.weak_type, x.sharding))
            elif type(x) is dict and all(isinstance(v, jax.Array) for v in x.values()):
                token.append(tuple((k, v.shape, v.dtype, v.weak_type, v.sharding) for k, v in x.items()))
            else:
                objects.append(x)
                token.append(id(x))
        token = tuple(token)
        hit = self._recent.get(token)
        if hit is not None and all(r() is x for r, x in zip(hit[0], objects)):
            return hit[1]
        program = self._program(args, quick_ok=True)
        try:
            refs = tuple(weakref.ref(x) for x in objects)
        except TypeError:  # an object without weak references: no memo
            return program
        if len(self._recent) >= 16:
            self._recent.clear()
        self._recent[token] = (refs, program)
        return program

    def lower(self, *args, **kwargs):
        return (self.top if _top_level() else self.nested).lower(*args, **kwargs)

    def compile(self, *args):
        """The compiled program for ``args`` (a :class:`jax.stages.Compiled`): from the
        executable cache when it holds it, else lowered and compiled now (and stored); the
        optimised program, also while a quick one is in use."""
        program = self._program(args) if self._executables is not None and _top_level() else None
        if isinstance(program, _Upgrade):
            program = program.result()
        return self.lower(*args).compile() if program is None else program

    def _program(self, args, quick_ok: bool = False):
        """Compiled program (or :class:`_Upgrade`) for top-level ``args`` from the in-process
        memo, the executable cache or a compile (with :data:`SMALL_OPTIONS` where the ``small``
        predicate holds, tiered where also ``quick_ok``), or None (arguments that cannot be
        keyed exactly, or a program neither small nor cached: JAX's jit handles those)."""
        from . import executable_cache as xc

        if jax.default_backend() != "cpu":
            return None  # loading serialized programs and small programs are CPU-only (untested elsewhere)
        keyed = xc.directory() is not None
        if not (keyed or self._small is not None):
            return None
        leaves, treedef = jax.tree_util.tree_flatten(args)
        # with one device every array is on it: the placement check (about 20 us a call for a
        # small solve's 30 leaves) only where there are several
        here = jax.sharding.SingleDeviceSharding(jax.devices()[0]) if jax.device_count() > 1 else None
        avals = []  # (this loop runs on every call: a small solve's arguments have 30 leaves)
        for x in leaves:
            if isinstance(x, jax.Array):
                if x.is_deleted() or (here is not None and x.sharding != here):
                    return None  # placement is not part of the key
                avals.append(x.aval)
            elif isinstance(x, np.ndarray):
                avals.append(jax.core.ShapedArray(x.shape, x.dtype))
            elif type(x) in (float, int, bool):
                avals.append(jax.typeof(x))  # a Python number (noise.isotropic(1.0)): jit's weak scalar
            else:
                return None  # other leaves: let jit decide their types
        from jax._src import config as jax_config

        context = jax_config.trace_context()
        memo = (treedef, tuple(avals), context, keyed)
        if memo in self._executables:
            return self._executables[memo]
        small = self._small is not None and bool(self._small(*args))
        if not (keyed or small):
            if quick_ok:
                self._executables[memo] = None  # calls: jit's own program, decided once
            return None
        options = SMALL_OPTIONS if small else self._options
        key = None
        if keyed:
            try:
                types = [(a.shape, a.dtype, a.weak_type) for a in avals]
                key = xc.disk_key(self._entry_name(), treedef, types, context, options)
            except xc.Uncacheable:
                key = None
        program = xc.lookup(key, jax.tree_util.tree_structure((args, {}))) if key is not None else None
        quick = program is None and quick_ok and small and _TIERED[0]
        if program is None and (key is not None or small):
            # Tracing may run small eager programs that JAX's cache serves; only the XLA
            # compile of this program is watched for a cache hit (a hit during tracing
            # kept every gradient step after the first from being stored).
            lowered = self.top.lower(*args)

            def full():
                with xc.fresh_compile() as fresh:
                    compiled = _compile(lowered, options)
                if fresh[0] and key is not None:
                    xc.store(key, compiled)
                return compiled

            if quick:
                with xc.fresh_compile():  # the quick program is never cached
                    first = _compile(lowered, QUICK_OPTIONS)
                program = _Upgrade(first, full, lambda up: self._upgraded(memo, up))
            else:
                program = full()
        self._executables[memo] = program
        return program

    def _upgraded(self, memo, upgrade: _Upgrade) -> None:
        """Background thread: the optimised program is ready (or failed); later calls use it."""
        if upgrade.error is not None:
            warnings.warn(f"jaxgraph: the optimised compile of {self._name} failed ({upgrade.error!r}); "
                          "the unoptimised program stays in use", RuntimeWarning, stacklevel=2)
            self._executables[memo] = upgrade.quick
        else:
            self._executables[memo] = upgrade.full

    def _entry_name(self) -> str:
        """The entry point's name in disk keys: with user code, that code's
        :func:`~jaxgraph.runtime.executable_cache.function_key` (raises ``Uncacheable``)."""
        if not self._user_code:
            return self._name
        from . import executable_cache as xc

        if self._fn_key is None:
            try:
                self._fn_key = xc.function_key(self.__wrapped__)
            except xc.Uncacheable:
                self._fn_key = False
        if self._fn_key is False:
            raise xc.Uncacheable(f"{self._name} holds something function_key cannot write out")
        return f"user {self._name} {self._fn_key}"

    def _cache_size(self) -> int:
        """Programs traced so far (both variants and those compiled here, from the executable
        cache or in tiers), as ``jax.jit``'s ``_cache_size``."""
        here = sum(p is not None for p in self._executables.values()) if self._executables is not None else 0
        return self.top._cache_size() + self.nested._cache_size() + here


def jit(fn):
    """``jax.jit(fn)`` for a user's own function that calls jaxgraph (a training step, a loss
    and its gradient through :func:`jaxgraph.solve`), compiled as jaxgraph's entry points are.

    - It compiles with :data:`COMPILER_OPTIONS`, which a plain ``jax.jit`` around the solve
      cannot get (JAX applies compiler options of the outermost ``jit`` only): about half the
      XLA time of ``jax.jit(jax.value_and_grad(loss))`` through the solve on the CPU
      (``benchmarks/backward_compile.py``).
    - While the persistent cache is on (:func:`enable_compilation_cache`) and the backend is
      the CPU, the compiled program is kept in :mod:`jaxgraph.runtime.executable_cache` under a
      key computed before tracing: everything a jaxgraph solve's key holds, plus
      :func:`~jaxgraph.runtime.executable_cache.function_key` of ``fn`` (its code, constants,
      defaults, closure contents and the globals it names, recursively: the loss function
      inside ``jax.value_and_grad`` and the problem, values and arrays it closes over are all
      written out). A second process that builds the same function over the same data loads
      the compiled step instead of tracing and compiling it. A closure over anything
      ``function_key`` cannot write out (a user class, a module of your own, an optax
      optimizer object) compiles as a plain jit with these options, every process again.

    Arguments are positional pytrees of arrays (no static arguments: close over static
    settings instead, or use ``functools.partial``); inside another transformation the plain
    ``jax.jit(fn)`` is used. The first call's function key is kept for the process, as
    ``jax.jit`` keeps its first trace: change closed-over data, and build a new ``jit``.
    """
    return entry_point(fn, executable_cache=True, user_code=True)


def default_cache_dir() -> Path:
    """``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/jaxgraph/jax`` (default
    ``~/.cache/jaxgraph/jax``)."""
    env = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "jaxgraph" / "jax"


#: Default bound of each on-disk store (JAX's cache folder, jaxgraph's executables in it).
DEFAULT_MAX_SIZE_BYTES = 1 << 30


def default_max_size() -> int:
    """The bound ``$JAX_COMPILATION_CACHE_MAX_SIZE`` gives JAX (bytes, -1: none) if set, else 1 GiB."""
    if os.environ.get("JAX_COMPILATION_CACHE_MAX_SIZE", "").strip():
        return int(jax.config.jax_compilation_cache_max_size)  # JAX parsed (and checked) it at import
    return DEFAULT_MAX_SIZE_BYTES


def enable_compilation_cache(path: str | os.PathLike | None = None, *, max_size_bytes: int | None = None) -> Path:
    """Store compiled XLA programs in ``path`` (default :func:`default_cache_dir`) and reuse them.

    Every program is cached, however small or quick to compile (JAX's own defaults skip
    programs that compile in under a second). Call before the first compilation; returns the
    folder used (created if missing).

    ``max_size_bytes`` bounds each of the two stores in the folder, JAX's programs and
    jaxgraph's executables (:mod:`jaxgraph.runtime.executable_cache`, in a subfolder): when a new
    entry would exceed it, the least recently used entries are deleted first. Default:
    ``$JAX_COMPILATION_CACHE_MAX_SIZE`` if set, else 1 GiB (a compiled pose-graph solve is
    0.5-1.5 MB); ``-1``: no bound (JAX's own default). It sets JAX's
    ``jax_compilation_cache_max_size``, which jaxgraph's store follows too.
    """
    size = default_max_size() if max_size_bytes is None else max_size_bytes
    if isinstance(size, bool) or not isinstance(size, int) or size < -1:
        raise ValueError(f"max_size_bytes must be a number of bytes >= 0 or -1 (no bound), got {size!r}")
    folder = Path(path).expanduser() if path is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", os.fspath(folder))
    jax.config.update("jax_compilation_cache_max_size", size)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
