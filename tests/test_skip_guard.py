"""CI's skip guard (tests/skip_guard.py): a skip not in the allowed list fails the run and is
named with its reason; allowed skips pass; both under pytest-xdist, as .ci/run runs it."""

import os
import re
import subprocess
import sys

import pytest

import skip_guard
from vlx_testlib import REPO

THROWAWAY = '''
import pytest

def test_runs():
  pass

@pytest.mark.parametrize("java", [True, False])
def test_java(java):
  if java:
    pytest.skip("no Java here")

def test_gloo():
  pytest.skip("gloo CPU collectives unavailable: probe timed out")
'''
MODULE_SKIP = '''
import pytest
pytest.importorskip("vlx_no_such_module", reason="parity tests need vlx_no_such_module")

def test_parity():
  pass
'''


def _pytest(tmp_path, allowed: str, *files):
  for name, text in files:
    (tmp_path / name).write_text(text)
  (tmp_path / "allowed.txt").write_text(allowed)
  env = dict(os.environ, VLX_ALLOWED_SKIPS=str(tmp_path / "allowed.txt"),
             PYTHONPATH=os.pathsep.join([os.path.join(REPO, "tests"),
                                         os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-n", "2", "-p", "skip_guard",
                         "-p", "no:cacheprovider", str(tmp_path)], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120)
  return proc.returncode, proc.stdout + proc.stderr


def test_unallowed_skips_fail_ci_and_are_named(tmp_path):
  rc, out = _pytest(tmp_path, "test_t.py::test_java[[]True[]] | no Java here  # no Java in CI\n",
                    ("test_t.py", THROWAWAY), ("test_parity_mod.py", MODULE_SKIP))
  assert rc == 1, out
  assert "NOT ALLOWED  test_t.py::test_gloo: gloo CPU collectives unavailable" in out, out
  # A module-level importorskip arrives as a collection report (from an xdist worker).
  assert "NOT ALLOWED  test_parity_mod.py: parity tests need vlx_no_such_module" in out, out
  assert "allowed  test_t.py::test_java[True]: no Java here" in out, out
  assert "skips: 3 (2 not allowed" in out, out


def test_allowed_skips_pass(tmp_path):
  rc, out = _pytest(tmp_path, "# comment\ntest_t.py::test_java[[]True[]] | no Java here\n"
                    "test_t.py::test_gloo | gloo CPU collectives\n", ("test_t.py", THROWAWAY))
  assert rc == 0, out
  assert "skips: 2 (0 not allowed" in out and "allowed  test_t.py::test_gloo" in out, out


def test_a_skip_with_another_reason_is_not_allowed():
  rules = skip_guard.parse_rules("tests/test_x.py::test_y | no Java here")
  assert skip_guard.allowed_by(rules, "tests/test_x.py::test_y", "no Java here (x)")
  assert skip_guard.allowed_by(rules, "tests/test_x.py::test_y", "gloo unavailable") is None
  assert skip_guard.allowed_by(rules, "tests/test_x.py::test_z", "no Java here") is None
  with pytest.raises(ValueError, match="allowed skips:1"):
    skip_guard.parse_rules("tests/test_x.py::test_y no separator")


def test_ci_runs_the_readme_test_command_with_the_guard():
  """.ci/run runs the README's test command, with the allowed-skips file this repo holds."""
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    readme = re.search(r"^(?:.*&& )?(python -m pytest [^\n`]*)", f.read(), re.M).group(1).strip()
  with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
    ci = f.read()
  assert "-rs" in readme.split(), readme
  assert re.search(rf"^{re.escape(readme)}$", ci, re.M), (readme, ci)
  assert 'VLX_ALLOWED_SKIPS="$PWD/tests/allowed_skips.txt"' in ci
  with open(os.path.join(REPO, "tests", "allowed_skips.txt"), encoding="utf-8") as f:
    rules = skip_guard.parse_rules(f.read())
  # The skips this guard exists for are never allowed.
  for nodeid, reason in (("tests/test_fusion_parity.py", "parity tests need torch"),
                         ("tests/test_pretrained.py", "parity tests need transformers"),
                         ("tests/test_multiprocess.py::test_two_processes_train_and_evaluate",
                          "gloo CPU collectives unavailable: ...")):
    assert skip_guard.allowed_by(rules, nodeid, reason) is None, nodeid
