"""Compiled programs kept across calls and processes, and multi-process set-up.

- :mod:`.compile_cache`: the jit entry point of every jaxgraph program (``entry_point``) and
  JAX's persistent compilation cache (``enable_compilation_cache``).
- :mod:`.executable_cache`: compiled programs on disk under a key computed before tracing.
- :mod:`.host_call`: Python functions as named XLA custom calls, so programs that call the
  host (CHOLMOD, progress lines) can be cached.
- :mod:`.distributed`: batches of problems over every device of a multi-process run.

This layer imports nothing of jaxgraph but :mod:`jaxgraph.smallmat`-free JAX code.
"""
