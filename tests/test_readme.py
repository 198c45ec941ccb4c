"""Every command in README.md is run by a test, so the guide cannot drift from the code.

Each line of a ```bash / ```sh / ```console block is one of:
- a `python -m vlx.main` run on the synthetic data: run here, cheaply (`,smoke` added to the
  variant, the tests' data dir, the workdir under a tmp dir; commands that share a
  workdir run in README order, so `--mode=eval` finds the run before it);
- a command an existing test already runs: listed in MAPPED with that test file and strings
  the file must contain (checked here); its flags are checked against the program's --help,
  and a `vlx.main` config it names is loaded with its overrides;
- an install or test command: must be the one `.ci/run` runs (`-q` aside).
Any other line fails, so a new README command needs a test before it lands.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shlex
import subprocess
from typing import Dict, List, Optional, Tuple

import pytest

from vlx_testlib import PYTHON, REPO, shapes_data_dir, subprocess_env  # noqa: F401

README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"
SHELL_BLOCKS = ("bash", "sh", "console")

# README command (regex on the command as written) -> (test file, strings it must contain).
MAPPED: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    # HF dir -> vlx dir -> HF, and the fine-tuned workdir exported.
    r"python -m vlx\.convert --src=\S+ --(out|export_hf)=\S+$": (
        "tests/test_pretrained.py", ("from vlx.convert.__main__ import main", "--out=",
                                     "--export_hf=")),
    # Fine-tuning an imported CLIP, fully and with the image tower locked.
    r"python -m vlx\.main --config=configs/clip\.py:(ft|lit)=\S+ --workdir=\S+$": (
        "tests/test_pretrained.py", ('@pytest.mark.parametrize("mode", ["lit", "ft"])',
                                    'variant=f"{mode}={imported},smoke"')),
    # An accelerator variant on coco_captions: one size of every config end to end as
    # `,smoke` on a coco-format dataset (at ,smoke the sizes differ only in the patch size, which
    # that file checks), and this exact command's message when the dataset is not built.
    r"python -m vlx\.main --config=configs/clip\.py:b16 --workdir=\S+$": (
        "tests/test_coco_format.py", ('SIZES = ("s32", "b32", "b16", "l14")',
                                      '"--config=configs/clip.py:b16"')),
    # A 2x2x2 mesh on 8 emulated devices, its losses compared with one device's.
    (r"JAX_NUM_CPU_DEVICES=8 python -m vlx\.main --config=configs/clip\.py:tiny --workdir=\S+ "
     r"--config\.mesh\.data=2 --config\.mesh\.fsdp=2 --config\.mesh\.tensor=2$"): (
         "tests/test_sharding_equivalence.py", (
             'MESH_222 = ("--config.mesh.data=2", "--config.mesh.fsdp=2", '
             '"--config.mesh.tensor=2")', "*MESH_222, num_devices=8")),
    # Every dual-encoder smoke run through vlx.main (SigLIP with one layer a tower); here its
    # config and overrides load.
    r"python -m vlx\.main --config=configs/siglip\.py:tiny --workdir=\S+ --config\.": (
        "tests/test_main_smoke.py", ('@pytest.mark.parametrize("family", ["clip", "align", '
                                     '"siglip"])',
                                     "run_main(family, workdir, shapes_data_dir, *shallow)")),
    # CoCa trained, then vlx.predict on a folder (beam) and on the test split (sampling).
    r"python -m vlx\.main --config=configs/coca\.py:tiny --workdir=\S+$": (
        "tests/test_coca.py", ('run_main("coca"',)),
    r"python -m vlx\.predict --workdir=\S+ (--images=|--split=)": (
        "tests/test_coca.py", ('"-m", "vlx.predict"', "--images=", "--method=beam",
                               "--split=test", "--limit=", "--method=sample")),
    # Two processes x 4 devices against one process x 8, and a SIGKILL of both.
    r"python experiments/launch_local\.py --num_processes=2 -- --config=configs/clip\.py:smoke": (
        "tests/test_multiprocess.py", ('"launch_local.py"', "--num_processes=2",
                                       "configs/clip.py:smoke")),
}


@dataclasses.dataclass(frozen=True)
class Command:
  line: int  # 1-based line in README.md
  text: str  # as written, comment dropped
  env: Tuple[Tuple[str, str], ...]  # leading NAME=VALUE assignments
  argv: Tuple[str, ...]

  @property
  def id(self) -> str:
    return f"L{self.line}:{' '.join(self.argv[:4])[:60]}"


def shell_commands(text: str) -> List[Command]:
  """The commands of the README's shell blocks (continuations joined, `&&` split, `$ ` prompts
  and comments dropped)."""
  out, block, pending, start = [], None, "", 0
  for number, raw in enumerate(text.splitlines(), 1):
    fence = re.match(r"^\s*```\s*(\S*)", raw)
    if fence:
      block = None if block is not None else fence.group(1)
      continue
    if block not in SHELL_BLOCKS:
      continue
    line = raw.strip()
    if block == "console":
      if not line.startswith("$ "):
        continue  # output
      line = line[2:]
    if not pending:
      start = number
    if line.endswith("\\"):
      pending += line[:-1] + " "
      continue
    line, pending = pending + line, ""
    for part in line.split("&&"):
      words = shlex.split(part, comments=True)
      env = []
      while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        env.append(tuple(words.pop(0).split("=", 1)))
      if words:
        out.append(Command(start, " ".join(shlex.quote(w) for w in words), tuple(env),
                           tuple(words)))
  return out


def ci_commands() -> List[Tuple[str, ...]]:
  """.ci/run's install and test commands (see `_normalize`)."""
  cmds = []
  for line in CI_RUN.read_text().splitlines():
    words = shlex.split(line, comments=True)
    if words and (words[:2] == ["python", "-m"] or words[0] in ("pip", "pytest")):
      cmds.append(_normalize(words))
  return cmds


def _normalize(words) -> Tuple[str, ...]:
  """`python -m pip install -q X` and `pip install X` are one command; the pytest command
  must match word for word."""
  words = list(words)
  words = words[2:] if words[:2] == ["python", "-m"] else words
  return tuple(w for w in words if not (words[0] == "pip" and w == "-q"))


def mapped(cmd: Command) -> Optional[Tuple[str, Tuple[str, ...]]]:
  written = " ".join([*(f"{k}={v}" for k, v in cmd.env), *cmd.argv])
  hits = [v for pattern, v in MAPPED.items() if re.match(pattern, written)]
  assert len(hits) <= 1, f"{written}: matches {len(hits)} MAPPED entries"
  return hits[0] if hits else None


def kind(cmd: Command) -> str:
  """How the test covers `cmd`: 'ci', 'mapped', 'run', or 'unknown'."""
  argv = cmd.argv
  if argv[0] == "bash" or argv[0] in ("pip", "pytest") or argv[:3] in (
      ("python", "-m", "pip"), ("python", "-m", "pytest")):
    return "ci"
  if mapped(cmd):
    return "mapped"
  if argv[:3] == ("python", "-m", "vlx.main"):
    return "run"
  return "unknown"


COMMANDS = shell_commands(README.read_text())


def _workdir(cmd: Command) -> Optional[str]:
  for arg in cmd.argv:
    if arg.startswith("--workdir="):
      return arg.split("=", 1)[1]
  return None


def run_groups() -> Dict[str, List[Command]]:
  """The commands to run here, grouped by workdir in README order (a later command may read
  the run of an earlier one)."""
  groups: Dict[str, List[Command]] = {}
  for cmd in COMMANDS:
    if kind(cmd) == "run":
      groups.setdefault(_workdir(cmd) or cmd.id, []).append(cmd)
  return groups


# ---- Every command has a test ----------------------------------------------------------------

def test_the_readme_has_commands_of_every_kind():
  kinds = {kind(c) for c in COMMANDS}
  assert {"ci", "mapped", "run"} <= kinds, kinds


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c.id)
def test_every_readme_command_is_covered(cmd):
  assert kind(cmd) != "unknown", (
      f"README.md line {cmd.line}: `{cmd.text}` is run by no test. Make it a `python -m "
      "vlx.main` run on the synthetic data (tests/test_readme.py runs those), or add it to "
      "MAPPED in tests/test_readme.py with the test that runs it.")


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if kind(c) == "ci"], ids=lambda c: c.id)
def test_install_and_test_commands_are_the_ones_ci_runs(cmd):
  if cmd.argv[0] == "bash":
    assert cmd.argv[1:] == (".ci/run",) and CI_RUN.is_file(), cmd.text
  else:
    assert not cmd.env, cmd.text
    assert _normalize(cmd.argv) in ci_commands(), (
        f"README.md line {cmd.line}: `{cmd.text}` is not what .ci/run runs: {ci_commands()}")


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if kind(c) == "mapped"], ids=lambda c: c.id)
def test_a_mapped_command_is_run_by_its_test(cmd):
  test_file, needles = mapped(cmd)
  source = (REPO / test_file).read_text()
  for needle in needles:
    assert needle in source, f"{test_file} no longer contains {needle!r} (README: {cmd.text})"


@functools.lru_cache(maxsize=None)
def _help(program: Tuple[str, ...]) -> str:
  proc = subprocess.run([PYTHON, *program, "--help"], cwd=REPO, env=subprocess_env(1),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout


def _check_main_args(args) -> None:
  """vlx.main's flags, config and overrides as vlx.main reads them; a fine-tune variant's
  checkpoint directory is the user's, so those configs are not loaded."""
  from vlx import config_checks, config_lib  # pylint: disable=g-import-not-at-top
  flags, overrides = config_lib.parse_argv(list(args))
  assert set(flags) <= {"config", "workdir", "mode"}, flags
  if re.search(r":.*\b(ft|lit)=", flags["config"]):
    return
  config = config_lib.load_config_file(str(REPO / flags["config"]))
  config_lib.apply_overrides(config, overrides)
  config_checks.check(config)


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if kind(c) == "mapped"], ids=lambda c: c.id)
def test_a_mapped_command_takes_its_flags(cmd):
  argv = list(cmd.argv)
  if argv[:3] == ["python", "-m", "vlx.main"]:
    _check_main_args(argv[3:])
    return
  program = tuple(argv[1:3]) if argv[1] == "-m" else (argv[1],)
  own = argv[1 + len(program):]
  passed_on = own[own.index("--") + 1:] if "--" in own else []  # launch_local -> vlx.main
  own = own[:len(own) - len(passed_on) - bool(passed_on)]
  text = _help(program)
  for flag in (a.split("=", 1)[0] for a in own if a.startswith("--")):
    assert flag in text, f"README.md line {cmd.line}: {' '.join(program)} has no {flag}"
  if passed_on:
    _check_main_args(passed_on)


# ---- The commands run here -------------------------------------------------------------------

def _cheap(cmd: Command, root, data_dir, evals: bool = True) -> List[str]:
  """`cmd` as a run of seconds: ',smoke' (its own few steps, left as they are: the same config
  as tests/test_main_smoke.py's, so the compiled steps come from the session's compilation
  cache; a changed step count would compile them again), the tests' data, a tmp workdir, and
  no evaluations if `not evals`."""
  args = [] if evals else ["--config.evals={}"]
  for arg in cmd.argv[3:]:
    if arg.startswith("--config=") and ":" in arg and "smoke" not in arg.split(":", 1)[1]:
      arg += ",smoke"
    elif arg.startswith("--workdir="):
      arg = f"--workdir={root / arg.split('=', 1)[1].lstrip('/')}"
    elif arg.startswith("--config.total_steps="):
      continue
    args.append(arg)
  if "--help" not in args:
    args.append(f"--config.data.source.data_dir={data_dir}")
  return [PYTHON, "-m", "vlx.main", *args]


@pytest.mark.parametrize("workdir", list(run_groups()))
def test_readme_runs(workdir, shapes_data_dir, tmp_path):
  group = run_groups()[workdir]
  for i, cmd in enumerate(group):
    # A training run whose workdir a later README command evaluates (--mode=eval) skips its
    # own evaluations: the same evaluators run there, once.
    evaluated_later = any("--mode=eval" in later.argv for later in group[i + 1:])
    argv = _cheap(cmd, tmp_path, shapes_data_dir, evals="--mode=eval" in cmd.argv
                  or not evaluated_later)
    proc = subprocess.run(argv, cwd=REPO, env=subprocess_env(1, **dict(cmd.env)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (f"README.md line {cmd.line}: `{cmd.text}` ran as "
                                  f"{argv[2:]} and exited {proc.returncode}:\n"
                                  f"{proc.stderr[-3000:]}")
    if "--help" in argv:
      assert "usage:" in proc.stdout, proc.stdout
    elif "--mode=eval" in argv:
      rows = (tmp_path / workdir / "eval_metrics.jsonl").read_text().splitlines()
      assert rows and all(len(json.loads(r)) > 1 for r in rows), rows
    else:
      assert (tmp_path / workdir / "metrics.jsonl").is_file(), proc.stderr[-3000:]


# ---- The table of families -------------------------------------------------------------------

def family_rows() -> List[Tuple[str, str, List[str], str]]:
  """(family, config path, variant words, docs link) of each row of README's family table."""
  rows = []
  for line in README.read_text().splitlines():
    m = re.match(r"\| ([^|]+) \| `(configs/\w+\.py)` \| ([^|]+) \| \[[^]]*\]\(([^)]+)\) \|$", line)
    if m:
      words = re.findall(r"`([^`]+)`", m.group(3))
      rows.append((m.group(1).strip(), m.group(2), words, m.group(4)))
  return rows


def test_the_family_table_names_real_configs_variants_and_pages():
  """Each row's config exists and takes each variant word listed (as `--help` reports them),
  and its docs page exists; every config file has a row."""
  from vlx import main  # pylint: disable=g-import-not-at-top
  rows = family_rows()
  assert {r[1] for r in rows} == {f"configs/{p.name}" for p in (REPO / "configs").glob("*.py")}
  for family, path, words, page in rows:
    assert (REPO / page).is_file(), (family, page)
    helptext = main.config_help(str(REPO / path))
    valid = re.search(r"variant words \(.*?\): (.*)", helptext).group(1)
    for word in words:
      assert word in valid.split(", "), f"README's {family} row: {path} has no variant {word!r}"
