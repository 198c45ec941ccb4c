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

# The suite is compile-bound (a smoke train step compiles in 20-160 s on a 2-core CPU and
# runs its steps in seconds), so the tests compile with XLA's backend (LLVM) optimisation
# off: the same HLO programs (fusion, layouts, sharding, collectives) in less optimised
# machine code. Compiles take ~30% less time, steps ~2x more; a test process and the
# `python -m vlx.main` runs it starts (vlx_testlib.subprocess_env) share the setting.
# VLX_TEST_XLA_FLAGS="" runs the tests on XLA's defaults.
TEST_XLA_FLAGS = os.environ.get("VLX_TEST_XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ["XLA_FLAGS"] = " ".join(
    f for f in (os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS) if f)

import jax  # noqa: E402

# Respect a device count the user already chose (JAX_NUM_CPU_DEVICES / XLA_FLAGS).
if "JAX_NUM_CPU_DEVICES" not in os.environ and "xla_force_host_platform_device_count" not in \
    os.environ.get("XLA_FLAGS", ""):
  jax.config.update("jax_num_cpu_devices", 8)


import skip_guard  # noqa: E402  (tests/ is on sys.path: rootdir conftest, no __init__.py)


def pytest_configure(config):
  """CI (VLX_ALLOWED_SKIPS set by .ci/run): list every skip, fail on one not allowed."""
  skip_guard.pytest_configure(config)
