"""A pytest plugin for CI: every skip is listed with its reason, and a skip that
tests/allowed_skips.txt does not allow fails the run.

Active only when VLX_ALLOWED_SKIPS names an allowed-skips file (.ci/run sets it), so a
developer without torch or gloo still gets plain skips locally. Without it, tests that CI
is meant to run (the parity tests' importorskip, the multi-process tests' gloo probe) could
vanish into the skip count of a green run.

File format, one rule a line (`#` starts a comment):
  <node id glob> | <text the skip reason must contain>
A skip is allowed when a rule's glob matches its node id (`fnmatch`, parametrized ids
included) and its reason contains the rule's text.

Works under pytest-xdist: the controller receives every worker's test and collection
reports (module-level `importorskip` skips arrive as collection reports), so the check runs
once, on the controller.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from typing import List, Optional, Tuple

import pytest

ENV = "VLX_ALLOWED_SKIPS"


@dataclasses.dataclass(frozen=True)
class Rule:
  node_glob: str
  reason_text: str


def parse_rules(text: str, where: str = "allowed skips") -> List[Rule]:
  """Lines `glob | reason text` -> rules; a malformed line is an error, not ignored."""
  rules = []
  for n, line in enumerate(text.splitlines(), 1):
    line = line.split("#", 1)[0].strip()
    if not line:
      continue
    glob, sep, reason = (s.strip() for s in line.partition("|"))
    if not sep or not glob or not reason:
      raise ValueError(f"{where}:{n}: expected '<node id glob> | <reason text>', got {line!r}")
    rules.append(Rule(glob, reason))
  return rules


def skip_reason(report) -> str:
  """The reason of a skipped test or collection report ("Skipped: " prefix dropped)."""
  longrepr = report.longrepr
  if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3:
    reason = str(longrepr[2])
  else:
    reason = str(longrepr)
  return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def allowed_by(rules: List[Rule], nodeid: str, reason: str) -> Optional[Rule]:
  for rule in rules:
    if fnmatch.fnmatchcase(nodeid, rule.node_glob) and rule.reason_text in reason:
      return rule
  return None


class SkipGuard:
  """Collects skips (test and collection reports), reports them, fails on unallowed ones."""

  def __init__(self, rules: List[Rule], source: str):
    self.rules = rules
    self.source = source
    self.skips: List[Tuple[str, str, bool]] = []  # (node id, reason, allowed)

  def _record(self, report):
    if not report.skipped or hasattr(report, "wasxfail"):
      return
    nodeid = report.nodeid or str(getattr(report, "fspath", ""))
    reason = skip_reason(report)
    if any(s[0] == nodeid and s[1] == reason for s in self.skips):
      return  # a module's collection skip reaches the controller from each worker
    self.skips.append((nodeid, reason, allowed_by(self.rules, nodeid, reason) is not None))

  def pytest_runtest_logreport(self, report):
    self._record(report)

  def pytest_collectreport(self, report):
    self._record(report)

  @property
  def unallowed(self):
    return [s for s in self.skips if not s[2]]

  def pytest_terminal_summary(self, terminalreporter):
    tr = terminalreporter
    tr.section(f"skips: {len(self.skips)} ({len(self.unallowed)} not allowed by {self.source})")
    for nodeid, reason, allowed in self.skips:
      tr.write_line(f"{'allowed' if allowed else 'NOT ALLOWED'}  {nodeid}: {reason}")
    if self.unallowed:
      tr.write_line(f"CI fails: {len(self.unallowed)} skip(s) of tests CI is meant to run; fix "
                    f"their cause or allow them (with the reason) in {self.source}", red=True)

  @pytest.hookimpl(trylast=True)
  def pytest_sessionfinish(self, session, exitstatus):
    if self.unallowed and exitstatus == pytest.ExitCode.OK:
      session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config):
  path = os.environ.get(ENV)
  if not path or hasattr(config, "workerinput"):  # off, or an xdist worker: the controller checks
    return
  try:
    with open(path, encoding="utf-8") as f:
      rules = parse_rules(f.read(), path)
  except OSError as e:
    raise pytest.UsageError(f"{ENV}={path}: cannot read the allowed-skips file ({e})") from None
  except ValueError as e:
    raise pytest.UsageError(str(e)) from None
  config.pluginmanager.register(SkipGuard(rules, os.path.relpath(path)), "vlx_skip_guard")
