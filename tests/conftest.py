"""Test configuration shared by every test module.

Four host devices are forced before JAX is imported so that the multi-device
(pmap / sharding) tests run on CPU, and float64 is enabled so that float64
references can be built; float32 tests pass float32 arrays explicitly. The CLI's persistent
compilation cache is off (tests/cli/test_cli.py checks it in a subprocess), and so is two-tier
compilation of small solves (in its own test module: on).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# In-process CLI calls must not switch on the persistent compilation cache for the rest of the
# session (every later compilation would be written to the user's cache folder).
os.environ.setdefault("JAXGRAPH_NO_COMPILE_CACHE", "1")
# Two-tier compilation of small solves compiles each first call twice: with two test workers
# on two cores that is extra work. tests/runtime/test_tiered_compile.py turns it on for itself.
os.environ.setdefault("JAXGRAPH_TIERED_COMPILATION", "0")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
