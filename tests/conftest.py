"""Tests run on 8 emulated CPU devices so every sharded path meets a real multi-device mesh."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Respect a device count the user already chose (JAX_NUM_CPU_DEVICES / XLA_FLAGS).
if "JAX_NUM_CPU_DEVICES" not in os.environ and "xla_force_host_platform_device_count" not in \
    os.environ.get("XLA_FLAGS", ""):
  jax.config.update("jax_num_cpu_devices", 8)
