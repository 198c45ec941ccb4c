"""vlx/runtime.py: entry points re-exec once with huge-page malloc, and can be told not to."""

import os
import subprocess
import sys

import pytest

from vlx import runtime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The marker is printed before the call: a re-exec runs the whole command again, so it shows
# twice, and what follows runs in the exec'ed process, whose os.environ was read at its start.
_PROBE = ("import os; print('start', flush=True); from vlx import runtime; "
          "runtime.reexec_with_hugepage_malloc(); "
          "print('tunables', os.environ.get('GLIBC_TUNABLES', '-'), "
          "runtime.hugepage_malloc_active())")


def _run(**env):
  full = {k: v for k, v in os.environ.items()
          if k not in ("GLIBC_TUNABLES", "VLX_HUGEPAGE_MALLOC", "VLX_HUGEPAGE_REEXECUTED")}
  full.update(PYTHONPATH=REPO, **env)
  lines = subprocess.run([sys.executable, "-c", _PROBE], env=full, capture_output=True,
                         text=True, timeout=60, check=True).stdout.splitlines()
  starts = lines.count("start")
  tunables = [l.split()[1:] for l in lines if l.startswith("tunables")]
  assert len(tunables) == 1, lines
  return starts, tunables[0][0], tunables[0][1] == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux") or not runtime.hugepage_malloc_available(),
                    reason="needs Linux, glibc >= 2.35 and transparent huge pages not 'never'")
def test_reexec_sets_the_tunable_once_and_keeps_other_tunables():
  starts, tunables, active = _run(GLIBC_TUNABLES="glibc.malloc.arena_max=4")
  assert starts == 2  # ran again from the start, in a process exec'ed with the tunable
  assert tunables.split(":") == ["glibc.malloc.arena_max=4", runtime.HUGEPAGE_TUNABLE]
  assert active


def test_opt_out_and_an_explicit_setting_do_not_reexec():
  assert _run(VLX_HUGEPAGE_MALLOC="0") == (1, "-", False)
  assert _run(GLIBC_TUNABLES="glibc.malloc.hugetlb=0") == (1, "glibc.malloc.hugetlb=0", False)
  assert _run(VLX_HUGEPAGE_REEXECUTED="1") == (1, "-", False)  # never a second exec
