"""Process-level settings that have to be in place before the process starts.

XLA:CPU allocates each execution's temporaries afresh (one `posix_memalign` of the
executable's whole temp size: 1.1 GB for the CPU benchmark step) and frees them at the
end, so glibc hands it a new `mmap` every step and the kernel faults it in again,
4 KiB at a time: 287k minor faults and ~0.5 CPU-seconds of kernel time per step,
measured (`experiments/profile_step.py`, 2-core EPYC). glibc >= 2.35 can back
such allocations with transparent huge pages (`glibc.malloc.hugetlb=1` makes malloc
`madvise(MADV_HUGEPAGE)` its mappings): ~1k faults per step, and steps of 1.45-1.68 s
instead of 1.74-1.94 s there.

glibc reads its tunables once, at process start, so entry points (`vlx.main`, the
benchmarks) call `reexec_with_hugepage_malloc()` first: it sets `GLIBC_TUNABLES` and
re-executes the same command line once (same pid). `VLX_HUGEPAGE_MALLOC=0` turns it
off; it does nothing where the kernel has THP disabled or glibc is too old.
"""

from __future__ import annotations

import os
import platform
import sys

HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
_REEXECUTED = "VLX_HUGEPAGE_REEXECUTED"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_at_least(major: int, minor: int) -> bool:
  lib, version = platform.libc_ver()
  if lib != "glibc" or not version:
    return False
  parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
  return parts >= (major, minor)


def hugepage_malloc_available() -> bool:
  """glibc supports the tunable and the kernel's THP mode is `always` or `madvise`."""
  if sys.platform != "linux" or not _glibc_at_least(2, 35):
    return False
  try:
    with open(_THP_MODE) as f:
      mode = f.read()
  except OSError:
    return False
  return "[never]" not in mode


def _hugetlb_setting():
  """The value GLIBC_TUNABLES gives glibc.malloc.hugetlb, or None where it is not set."""
  for item in os.environ.get("GLIBC_TUNABLES", "").split(":"):
    name, _, value = item.partition("=")
    if name == "glibc.malloc.hugetlb":
      return value
  return None


def hugepage_malloc_active() -> bool:
  """Whether this process started with malloc on transparent huge pages (1) or hugetlbfs (2)."""
  return _hugetlb_setting() in ("1", "2")


def reexec_with_hugepage_malloc() -> None:
  """Re-executes this process once with huge-page malloc, where it is available and off.

  Call it first thing in a `__main__` block, before importing JAX (or anything heavy). Returns
  without re-executing when GLIBC_TUNABLES already sets glibc.malloc.hugetlb (to any value),
  when unavailable, when this process was already re-executed, or with VLX_HUGEPAGE_MALLOC=0.
  """
  if os.environ.get("VLX_HUGEPAGE_MALLOC", "1") == "0" or _hugetlb_setting() is not None:
    return  # off, or the user's own setting
  # A sentinel stops a second exec where the loader drops GLIBC_TUNABLES (secure execution).
  if os.environ.get(_REEXECUTED) or not hugepage_malloc_available():
    return
  os.environ[_REEXECUTED] = "1"
  current = os.environ.get("GLIBC_TUNABLES", "")
  os.environ["GLIBC_TUNABLES"] = f"{current}:{HUGEPAGE_TUNABLE}" if current else HUGEPAGE_TUNABLE
  sys.stdout.flush()
  sys.stderr.flush()
  # sys.orig_argv keeps `-m vlx.main` and interpreter flags; argv[0] is the interpreter.
  os.execv(sys.executable, [sys.executable] + list(sys.orig_argv[1:]))
