"""Config loading and `--config.key=value` overrides: typed, validated, one-line errors."""

import subprocess

import pytest

from vlx import config_lib
from vlx_testlib import PYTHON, REPO, subprocess_env

FAMILIES = ("clip", "align", "siglip")
VARIANTS = ("tiny", "smoke", "b32", "b16", "l14", "s32")


def _main(*args):
  return subprocess.run([PYTHON, "-m", "vlx.main", *args], cwd=REPO, env=subprocess_env(),
                        capture_output=True, text=True, timeout=120)


def _load(spec="clip.py:smoke"):
  return config_lib.load_config_file(f"{REPO}/configs/{spec}")


def _assert_one_line_error(proc, *needles):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert "Traceback" not in proc.stderr
  assert lines[0].startswith("vlx: config error:"), lines[0]
  for needle in needles:
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("key,needle", [
    ("nope", "'nope'"),
    ("model.image.nope", "'model.image.nope'"),
    ("modle.image.depth", "'modle'"),
])
def test_unknown_key_exits_2_with_one_line(tmp_path, key, needle):
  proc = _main("--config=configs/clip.py:smoke", f"--workdir={tmp_path / 'w'}",
               f"--config.{key}=1")
  _assert_one_line_error(proc, "unknown config key", needle)
  assert not (tmp_path / "w").exists(), "nothing may run on a bad config"


def test_unknown_key_suggests_close_match():
  config = _load()
  with pytest.raises(config_lib.ConfigError, match=r"did you mean 'total_steps'"):
    config_lib.set_key(config, "total_step", "3")
  with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'model.image.widht'"):
    config_lib.set_key(config, "model.image.widht", "3")
  # A locked config never grows a new field silently.
  assert "total_step" not in config and "widht" not in config.model.image


def test_bad_value_exits_2_with_one_line(tmp_path):
  proc = _main("--config=configs/clip.py:smoke", f"--workdir={tmp_path / 'w'}",
               "--config.total_steps=abc")
  _assert_one_line_error(proc, "'total_steps'", "'abc'")


def test_missing_config_file_exits_2(tmp_path):
  proc = _main("--config=configs/nope.py", f"--workdir={tmp_path}")
  _assert_one_line_error(proc, "nope.py")


def test_unknown_variant_exits_2_with_one_line(tmp_path):
  proc = _main("--config=configs/clip.py:b99", f"--workdir={tmp_path}")
  _assert_one_line_error(proc, "b99")


def test_typed_overrides_apply():
  config = _load()
  config_lib.apply_overrides(config, [
      ("total_steps", "7"), ("optimizer.lr", "3e-4"), ("optimizer.weight_decay", "0"),
      ("model.image.scan", "true"), ("model.text.causal", "False"),
      ("evals.linear_probe.shots", "(1, 3)"), ("mesh.fsdp", "2"), ("init_from", "/some/dir"),
      ("data.pp_train", "decode|value_range(0,1)"), ("model.bias_init", "-5.0"),
  ])
  assert config.total_steps == 7 and isinstance(config.total_steps, int)
  assert config.optimizer.lr == 3e-4 and isinstance(config.optimizer.lr, float)
  assert config.optimizer.weight_decay == 0.0 and isinstance(config.optimizer.weight_decay, float)
  assert config.model.image.scan is True and config.model.text.causal is False
  assert config.evals.linear_probe.shots == (1, 3) and isinstance(
      config.evals.linear_probe.shots, tuple)
  assert config.mesh.fsdp == 2 and config.init_from == "/some/dir"
  assert config.data.pp_train == "decode|value_range(0,1)"
  assert config.model.bias_init == -5.0


@pytest.mark.parametrize("key,value,expect", [
    ("total_steps", "1.5", "expected int"),
    ("total_steps", "abc", "cannot parse"),
    ("model.image.scan", "maybe", "expected a boolean"),
    ("evals.linear_probe.shots", "3", "expected tuple"),
    ("optimizer.lr", "'fast'", "expected float"),
])
def test_bad_value_type_is_clear(key, value, expect):
  config = _load()
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.set_key(config, key, value)
  assert f"bad value for config key {key!r}" in str(e.value)
  assert expect in str(e.value)


def test_parse_argv_splits_flags_and_overrides():
  flags, overrides = config_lib.parse_argv(
      ["--config=configs/clip.py:smoke", "--workdir=/w", "--config.a.b=x=y"])
  assert flags == {"config": "configs/clip.py:smoke", "workdir": "/w"}
  assert overrides == [("a.b", "x=y")]
  with pytest.raises(config_lib.ConfigError, match="expected --name=value"):
    config_lib.parse_argv(["positional"])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_loads(family, variant):
  config = _load(f"{family}.py:{variant}")
  assert config.is_locked
  assert list(config.objectives) == [family]
  assert config.batch_size > 0 and config.model.embed_dim > 0
  assert config.model.text.max_len == config.data.max_len
  if variant == "smoke":
    assert config.total_steps == 6 and config.batch_size == 16
    assert config.data.source.variant == "small"
  if variant in ("tiny", "smoke"):
    assert config.data.name == "synthetic_shapes"
  else:
    assert config.data.name == "tfds" and config.model.dtype == "bfloat16"
  # The model config matches the model's own fields (every key is a real option).
  from vlx.train import trainer  # pylint: disable=g-import-not-at-top
  trainer.build_model(config)
