"""vlx/runtime.py: entry points re-exec once with huge-page malloc, and can be told not to."""

import os
import subprocess
import sys

import pytest

from vlx import runtime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROBE = ("import os; from vlx import runtime; runtime.reexec_with_hugepage_malloc(); "
          "print('pid', os.getpid(), os.environ.get('GLIBC_TUNABLES', ''))")


def _run(**env):
  full = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES",
                                                            "VLX_HUGEPAGE_MALLOC")}
  full.update(PYTHONPATH=REPO, **env)
  out = subprocess.run([sys.executable, "-c", _PROBE], env=full, capture_output=True,
                       text=True, timeout=60, check=True).stdout.split()
  return out


@pytest.mark.skipif(not runtime.hugepage_malloc_available(),
                    reason="needs glibc >= 2.35 and transparent huge pages not 'never'")
def test_reexec_sets_the_tunable_once_and_keeps_other_tunables():
  out = _run(GLIBC_TUNABLES="glibc.malloc.arena_max=4")
  assert out[0] == "pid" and len(out) == 3  # printed once: the re-exec'd process runs the rest
  assert out[2].split(":") == ["glibc.malloc.arena_max=4", runtime.HUGEPAGE_TUNABLE]


def test_opt_out_and_already_set_do_not_reexec():
  assert _run(VLX_HUGEPAGE_MALLOC="0")[2:] == []
  assert _run(GLIBC_TUNABLES="glibc.malloc.hugetlb=0")[2] == "glibc.malloc.hugetlb=0"
