"""What every ``jaxgraph`` command shares: exit codes and the failure they map from, one-line
messages on stderr, the solver settings both solve commands take (:class:`Options`),
progress lines, output-path checks, the persistent compilation cache, reading the input
graph (dtype included) and timing.

Nothing here imports JAX at module level, so ``jaxgraph --help`` and the path checks that
run before any work stay fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

# Exit codes (docs/solver.md, "Command line").
OK, NOT_CONVERGED, USER_ERROR = 0, 1, 2


class SolveFailed(RuntimeError):
    """The solve ran but did not give a result that may be written (exit code 1)."""


def package_version() -> str:
    """The installed distribution's version (``jaxgraph --version``, ``splat --version``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxgraph")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def error(message: str) -> int:
    """Print ``jaxgraph: error: message`` on stderr; returns :data:`USER_ERROR` (exit code 2)."""
    print(f"jaxgraph: error: {message}", file=sys.stderr)
    return USER_ERROR


def note(message: str) -> None:
    """Print ``jaxgraph: note: message`` on stderr (something ignored or turned off; not an error)."""
    print(f"jaxgraph: note: {message}", file=sys.stderr)


def exit_code(fn, *args, **kwargs) -> int:
    """Call ``fn(*args, **kwargs)`` and map its outcome to an exit code.

    :data:`OK` when it returns, :data:`NOT_CONVERGED` for :class:`SolveFailed`,
    :data:`USER_ERROR` for ``ValueError``/``OSError`` (bad input or paths); the message is
    one line on stderr.
    """
    try:
        fn(*args, **kwargs)
    except SolveFailed as exc:
        print(f"jaxgraph: {exc}", file=sys.stderr)
        return NOT_CONVERGED
    except (ValueError, OSError) as exc:
        return error(str(exc))
    return OK


#: Input formats of ``jaxgraph solve --format`` (docs/formats.md).
FORMATS = ("g2o", "bal", "bundler", "stereo")
#: Formats whose problems are bundle adjustment: LM with diagonal damping by default.
BUNDLE_FORMATS = ("bal", "bundler")
_BY_SUFFIX = {".g2o": "g2o", ".bal": "bal", ".out": "bundler"}


def input_format(input_path, given: str | None = None) -> str:
    """The format of ``input_path``: ``given`` (``--format``), else by its name: ``.g2o`` g2o,
    ``.bal`` bal, ``.out`` bundler. Raises ``ValueError`` saying which ``--format`` to pass for
    any other name (``.txt`` is used by both BAL and stereo files)."""
    if given is not None:
        if given not in FORMATS:
            raise ValueError(f"unknown format {given!r}; expected one of {', '.join(FORMATS)}")
        return given
    p = Path(input_path)
    suffix = p.suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    if p.name.startswith("VO_stereo_factors") or suffix == ".txt":
        raise ValueError(f"{input_path}: a .txt file may be a BAL file or stereo visual odometry factors; "
                         "pass --format bal or --format stereo")
    raise ValueError(f"{input_path}: cannot tell the format from the file name (.g2o is g2o, .bal bal, .out "
                     f"bundler); pass --format {'|'.join(FORMATS)}")


# the library's trial budget (TerminationConfig.max_iterations), so that a file solves alike
# from Python and from the command line; a literal, because importing the solver here would
# import JAX for `--help` (tests/cli/test_formats.py checks it equals the library's)
LIBRARY_TRIALS = 2000


@dataclass(frozen=True)
class Options:
    """The settings that ``run_solve`` and ``run_batch`` share: keyword arguments of both, and
    flags of ``jaxgraph solve`` of the same names."""

    method: str = "lm"  # --method: "lm" (Levenberg-Marquardt) or "gn" (Gauss-Newton)
    linear_solver: str = "auto"  # --linear-solver: "auto", "host", "cholesky", "dense" or "pcg"
    max_iterations: int = LIBRARY_TRIALS  # --max-iterations: most trials (accepted + rejected steps)
    max_accepted_iterations: int | None = None  # --max-accepted-iterations: most accepted steps (GTSAM's count)
    float32: bool = False  # --float32: solve in float32 (default float64)
    strict: bool = False  # --strict: reject non-positive-definite information matrices
    overwrite: bool = False  # --overwrite: --output may be the input file
    format: str | None = None  # --format: "g2o", "bal", "bundler", "stereo"; None: by the file name
    diagonal_damping: bool | None = None  # --(no-)diagonal-damping; None: on for bal and bundler
    trackxyz: str = "relative_point"  # --trackxyz: g2o EDGE_SE3_TRACKXYZ as "relative_point" or "bearing_range"
    landmark_prior: float | None = None  # --landmark-prior: sigma holding g2o landmarks at the file's values
    tolerance: float | None = None  # --tolerance: relative cost decrease that stops the solve; None: the library's

    def resolved(self, input_path) -> Options:
        """These options with ``format`` (from the file name when not given) and
        ``diagonal_damping`` (on for bundle adjustment when not given) filled in; raises
        ``ValueError`` when the format cannot be told."""
        fmt = input_format(input_path, self.format)
        damping = self.diagonal_damping if self.diagonal_damping is not None else fmt in BUNDLE_FORMATS
        return replace(self, format=fmt, diagonal_damping=damping)

    def solver_settings(self) -> dict:
        """The keyword arguments of :func:`jaxgraph.solve` among these options."""
        damping = self.diagonal_damping if self.diagonal_damping is not None else self.format in BUNDLE_FORMATS
        out = {"method": self.method, "linear_solver": self.linear_solver, "max_iterations": self.max_iterations,
               "max_accepted_iterations": self.max_accepted_iterations, "diagonal_damping": bool(damping)}
        if self.tolerance is not None:
            out["tolerance"] = self.tolerance
        return out


def solver_flags(args) -> dict:
    """The :class:`Options` fields read from the parsed ``argparse.Namespace`` ``args``, as a
    dict of keyword arguments for ``run_solve`` and ``run_batch``."""
    return {f.name: getattr(args, f.name) for f in fields(Options)}


#: The largest count a flag takes: the solver's loop counters are int32.
INT32_MAX = 2**31 - 1


def positive_int(text: str) -> int:
    """``argparse`` type: ``text`` as an integer in ``[1, 2**31 - 1]`` (the solver counts in
    int32), else an error naming what was given."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    if value > INT32_MAX:
        raise argparse.ArgumentTypeError(f"expected a positive integer at most {INT32_MAX} (int32), got {value}")
    return value


def _finite_float(text: str, *, zero_allowed: bool) -> float:
    """``text`` as a finite float, > 0 (or >= 0 with ``zero_allowed``), else an
    ``argparse.ArgumentTypeError`` naming what was given."""
    bound = ">= 0" if zero_allowed else "> 0"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}") from None
    if not ((value >= 0 if zero_allowed else value > 0) and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """``argparse`` type: ``text`` as a finite number >= 0, else an error naming what was given."""
    return _finite_float(text, zero_allowed=True)


def positive_float(text: str) -> float:
    """``argparse`` type: ``text`` as a finite number > 0, else an error naming what was given."""
    return _finite_float(text, zero_allowed=False)


def print_progress(iteration, cost, damping, step_norm, accepted):
    """The solver ``callback`` of ``jaxgraph solve``: one line per trial.

    Args: the trial's 0-based ``iteration``, ``cost`` after the trial, LM ``damping``
    (lambda), ``step_norm`` (norm of the tangent step) and whether the step was
    ``accepted``. A module-level function, so the compiled solve that calls it is found again
    in the persistent compilation cache by the next ``jaxgraph`` process (see
    jaxgraph/solver/progress.py).
    """
    print(
        f"  iter {int(iteration) + 1:4d}  cost {float(cost):.9e}  lambda {float(damping):.1e}  "
        f"|dx| {float(step_norm):.3e}  {'accepted' if bool(accepted) else 'rejected'}",
        flush=True,
    )


def check_output_paths(input_path, *, overwrite: bool = False, **paths) -> None:
    """Fail fast (``ValueError`` naming the flag) unless every given output path can be written.

    ``paths``: flag name -> path or None (``output=...``, ``report=...``, ``plot=...``). An output
    may not be the input file unless ``overwrite``; two outputs may not share a path. A path
    that does not exist yet is created and removed again to prove the folder is writable.
    """
    seen = {}
    src = Path(input_path) if input_path is not None else None
    for flag, path in paths.items():
        if path is None:
            continue
        name = "--" + flag.replace("_", "-")
        p = Path(path)
        key = os.path.abspath(p)
        if key in seen:
            raise ValueError(f"{name} and {seen[key]} are the same file {path}")
        seen[key] = name
        if p.is_dir():
            raise ValueError(f"{name} {path} is a folder, expected a file path")
        if (src is not None and p.exists() and src.exists() and os.path.samefile(p, src)
                and (flag != "output" or not overwrite)):
            raise ValueError(f"{name} {path} is the input file; pass --overwrite to replace the input with the result")
        folder = p.parent if str(p.parent) else Path(".")
        if not folder.is_dir():
            raise ValueError(f"{name} {path}: folder {folder} does not exist")
        try:
            if p.exists():
                with open(p, "a"):
                    pass
            else:
                with open(p, "x"):
                    pass
                p.unlink()
        except OSError as exc:
            raise ValueError(f"{name} {path} is not writable: {exc.strerror or exc}") from None


def use_compile_cache(disabled: bool) -> None:
    """Turn JAX's persistent compilation cache on (:func:`jaxgraph.enable_compilation_cache`),
    or off when ``disabled`` (``--no-compile-cache``) or ``$JAXGRAPH_NO_COMPILE_CACHE`` is set
    to anything but ``0``. Call before the first compilation."""
    if disabled or os.environ.get("JAXGRAPH_NO_COMPILE_CACHE", "") not in ("", "0"):
        import jax

        # Off means off, even where JAX would read $JAX_COMPILATION_CACHE_DIR by itself.
        jax.config.update("jax_enable_compilation_cache", False)
        return
    from ..runtime.compile_cache import enable_compilation_cache

    try:
        enable_compilation_cache()
    except OSError as exc:  # an unwritable cache folder must not stop a solve
        note(f"compilation cache disabled ({exc})")


def count_between(problem) -> int:
    """Number of between factors (the graph's edges) in ``problem``."""
    from ..graph import Between

    return sum(g.count for g in problem.factors if isinstance(g.type, Between))


@dataclass(frozen=True)
class Input:
    """A problem read from a file, with what the commands print and report about it."""

    path: Any  # as given on the command line (str or Path)
    problem: Any  # jaxgraph Problem
    values: dict  # variable group name -> [count, param_dim] array
    dtype: Any  # numpy dtype of the values
    poses: int  # variables of the first group (poses; cameras for bundle adjustment)
    edges: int  # between factors
    format: str = "g2o"  # the file's format (FORMATS)

    @property
    def variables(self) -> dict:
        """Variable group name -> count."""
        return {v.name: int(v.count) for v in self.problem.variables}

    def describe(self) -> str:
        """``N poses, M edges (SE2)`` for a pose graph; every variable and factor group otherwise."""
        problem = self.problem
        if len(problem.variables) == 1:
            return f"{self.poses} poses, {self.edges} edges ({problem.variables[0].kind})"
        vs = ", ".join(f"{v.count} {v.name} ({v.manifold.name})" for v in problem.variables)
        fs = ", ".join(f"{g.count} {g.name} ({g.type})" for g in problem.factors)
        return f"{vs}; {fs}"

    def sizes(self) -> str:
        """``N poses`` for a pose graph, ``N cameras, P points`` and the like otherwise."""
        if len(self.problem.variables) == 1:
            return f"{self.poses} poses"
        return ", ".join(f"{v.count} {v.name}" for v in self.problem.variables)


def read_input(input_path, options: Options) -> Input:
    """Read ``input_path`` in ``options.format`` (by the file name when None) for a command.

    ``options.trackxyz`` and ``options.landmark_prior``: how a g2o file's landmarks are read
    (:func:`jaxgraph.io.read_g2o`; refused for other formats). ``options.float32``: solve in float32; otherwise JAX's float64 mode (``jax_enable_x64``)
    is turned on first and the values are float64. ``options.strict``: reject information
    matrices that are not positive definite instead of repairing them (g2o files,
    :func:`jaxgraph.io.read_g2o`). Raises ``ValueError`` (``jaxgraph.io.FormatError``) or
    ``OSError`` for a bad file.
    """
    fmt = input_format(input_path, options.format)
    import jax

    if not options.float32:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from .. import io

    scalar = jnp.float32 if options.float32 else jnp.float64
    if fmt == "g2o":
        problem, values = io.read_g2o(input_path, strict=options.strict, dtype=scalar, trackxyz=options.trackxyz,
                                      landmark_prior=options.landmark_prior)
    else:
        for flag, value, default in (("--trackxyz", options.trackxyz, "relative_point"),
                                     ("--landmark-prior", options.landmark_prior, None)):
            if value != default:
                raise ValueError(f"{flag} applies to g2o files; {input_path} is read as {fmt}")
        reader = {"bal": io.read_bal, "bundler": io.read_bundler, "stereo": io.read_stereo_vo}[fmt]
        problem, values = reader(input_path, dtype=scalar)
    return Input(path=input_path, problem=problem, values=values, dtype=jnp.dtype(scalar),
                 poses=int(problem.variables[0].count), edges=int(count_between(problem)), format=fmt)


def write_output(fmt: str, path, problem, values) -> None:
    """Write ``values`` of ``problem`` to ``path`` in the input's format ``fmt`` (a stereo problem
    also writes its poses and calibration files beside it, :func:`jaxgraph.io.stereo_vo_paths`)."""
    from .. import io

    writer = {"g2o": io.write_g2o, "bal": io.write_bal, "bundler": io.write_bundler, "stereo": io.write_stereo_vo}[fmt]
    writer(path, problem, values)


def variable_id(problem, group: str, index: int):
    """The file's id of variable ``index`` of ``group`` (vertex, pose or landmark id), or ``index``."""
    key = {"poses": ("vertex_ids", "pose_ids"), "landmarks": ("landmark_ids",)}.get(group, ())
    for k in key:
        if k in problem.metadata:
            return int(problem.metadata[k][index])
    return index


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), wall-clock seconds it took)``; blocks until JAX arrays in the result are ready."""
    import jax

    t0 = time.perf_counter()
    value = jax.block_until_ready(fn(*args, **kwargs))
    return value, time.perf_counter() - t0
