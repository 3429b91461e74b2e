"""Compiled programs kept across calls and processes, and multi-process set-up.

- :mod:`.compile_cache`: the jit entry point of every jaxgraph program (``entry_point``),
  the same for a user's own function over the solve (``jit``: a training step compiled with
  jaxgraph's options and kept on disk), and JAX's persistent compilation cache
  (``enable_compilation_cache``).
- :mod:`.executable_cache`: compiled programs on disk under a key computed before tracing.
- :mod:`.host_call`: Python functions as named XLA custom calls, so programs that call the
  host (CHOLMOD, progress lines) can be cached.
- :mod:`.distributed`: batches of problems over every device of a multi-process run.

This layer imports nothing of jaxgraph but :mod:`jaxgraph.smallmat`-free JAX code.
"""

from .compile_cache import jit

__all__ = ["jit"]
