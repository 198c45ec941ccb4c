"""Tests run on 8 emulated CPU devices so every sharded path meets a real multi-device mesh."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import tempfile  # noqa: E402

# One persistent XLA compilation cache per test session, shared by the pytest-xdist workers
# and the `python -m vlx.main` subprocesses the tests start (they inherit the environment):
# the same smoke step is compiled by many tests and processes, and a cached executable is
# the one XLA would build again. A cache the user chose is kept.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(),
    f"vlx_test_xla_cache_{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}"))

import jax  # noqa: E402

# Respect a device count the user already chose (JAX_NUM_CPU_DEVICES / XLA_FLAGS).
if "JAX_NUM_CPU_DEVICES" not in os.environ and "xla_force_host_platform_device_count" not in \
    os.environ.get("XLA_FLAGS", ""):
  jax.config.update("jax_num_cpu_devices", 8)


import skip_guard  # noqa: E402  (tests/ is on sys.path: rootdir conftest, no __init__.py)


def pytest_configure(config):
  """CI (VLX_ALLOWED_SKIPS set by .ci/run): list every skip, fail on one not allowed."""
  skip_guard.pytest_configure(config)
