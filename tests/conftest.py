"""Test configuration shared by every test module.

Four host devices are forced before JAX is imported so that the multi-device
(pmap / sharding) tests run on CPU, and float64 is enabled so that float64
references can be built; float32 tests pass float32 arrays explicitly.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
