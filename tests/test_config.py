"""Config loading and `--config.key=value` overrides: typed, validated, one-line errors."""

import subprocess

import pytest

from vlx import config_lib
from vlx_testlib import PYTHON, REPO, shapes_data_dir, subprocess_env  # noqa: F401

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
  from vlx import build  # pylint: disable=g-import-not-at-top
  build.build_model(config)


# ---- Variants: one parser, `,smoke` on every accelerator size (issue 17, item 2) -----------

ACCELERATOR_FAMILIES = ("clip", "siglip", "align", "coca", "captioner")
ACCELERATOR_SIZES = ("s32", "b32", "b16", "l14")


@pytest.mark.parametrize("family", ACCELERATOR_FAMILIES)
@pytest.mark.parametrize("size", ACCELERATOR_SIZES)
def test_smoke_keeps_the_accelerator_variant_and_shrinks_it(family, size):
  """`<size>,smoke` is the same run (data, pp ops, splits, image and patch size, pooling,
  dtype, scan/remat, mesh, objectives, evaluators) made small enough for seconds on a CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vlx import build  # pylint: disable=g-import-not-at-top
  full, smoke = _load(f"{family}.py:{size}"), _load(f"{family}.py:{size},smoke")
  for key in ("data.name", "data.source.tfds_name", "data.pp_train", "data.pp_eval",
              "data.train_split", "data.test_split", "data.image_size", "data.max_len",
              "model.name", "model.dtype", "model.image.patch_size", "model.image.pool",
              "model.image.scan", "model.image.remat", "model.text.max_len",
              "model.text.scan", "model.text.remat", "mesh", "sharding"):
    node_full, node_smoke = full, smoke
    for part in key.split("."):
      node_full, node_smoke = node_full[part], node_smoke[part]
    assert node_full == node_smoke, key
  assert smoke.data.name == "tfds" and smoke.data.test_split == "val"
  assert smoke.objectives.to_dict() == full.objectives.to_dict()
  assert list(smoke.evals) == list(full.evals)
  assert {k: v.type for k, v in smoke.evals.items()} == {k: v.type for k, v in full.evals.items()}
  # Small: 2-layer 64-wide towers, a batch 8 devices divide, a few steps, bounded evals.
  assert smoke.model.image.width == smoke.model.text.width == 64
  assert smoke.model.image.depth == 2
  assert smoke.batch_size == 16 and smoke.total_steps == 4
  assert 0 < smoke.checkpoint_every <= smoke.total_steps
  assert smoke.eval_every <= smoke.total_steps
  assert all(0 < ev.limit <= 32 for ev in smoke.evals.values())
  # Builds, and its parameters shard on the variant's 8-device mesh (shapes only).
  model = build.build_model(smoke)
  mesh = mesh_lib.make_mesh(smoke.mesh, devices=jax.devices()[:8])
  rules = mesh_lib.rules_from_config(smoke.sharding)
  boxed = build.abstract_params(smoke, model, mesh, rules)
  mesh_lib.logical_to_shardings(boxed, mesh, rules)
  num_params = sum(x.size for x in jax.tree.leaves(mesh_lib.unbox(boxed)))
  assert num_params < 5_000_000, num_params


@pytest.mark.parametrize("spec", ["clip.py:l14,smoke"])
def test_accelerator_smoke_takes_a_finite_sharded_step(spec):
  """One real train step of an accelerator smoke variant on its 8-device mesh (scan, remat,
  bf16 and FSDP as configured, 14 px patches). Every variant runs end to end through
  vlx.main in the real-data test; this is the quick in-process check."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from vlx.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vlx import build  # pylint: disable=g-import-not-at-top
  from vlx.train import trainer  # pylint: disable=g-import-not-at-top
  from vlx.train.optimizer import make_optimizer  # pylint: disable=g-import-not-at-top
  from vlx_testlib import one_train_step  # pylint: disable=g-import-not-at-top
  config = _load(spec)
  model = build.build_model(config)
  mesh = mesh_lib.make_mesh(config.mesh, devices=jax.devices()[:8])
  rules = mesh_lib.rules_from_config(config.sharding)
  boxed = build.abstract_params(config, model, mesh, rules)
  tx, _ = make_optimizer(config.optimizer, mesh_lib.unbox(boxed), config.total_steps)
  state, _ = trainer.create_state(config, model, tx, mesh, rules, boxed)
  rng = np.random.default_rng(0)
  b, s, length = config.batch_size, config.data.image_size, config.data.max_len
  text = rng.integers(3, 500, (b, length)).astype(np.int32)
  text[:, 10], text[:, 11:] = config.model.text.eos_id, 0
  batch = {"image": rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32), "text": text}
  _, metrics = one_train_step(config, model, state, mesh, tx, batch)
  assert np.isfinite(float(metrics["train/loss"]))


@pytest.mark.parametrize("spec,word,valid", [
    ("clip.py:tiny,foo", "'foo'", "tiny, s32, b32, b16, l14, smoke, runlocal, ft=DIR, lit=DIR"),
    ("clip.py:b16,smoke,tiny", "two sizes", "ft=DIR"),
    ("clip.py:tiny,blind", "'blind'", "lit=DIR"),
    ("siglip.py:foo=1", "'foo=1'", "ft=DIR, lit=DIR"),
    ("align.py:b16,smok", "'smok'", "ft=DIR, lit=DIR"),
    ("coca.py:tiny,ft=/x", "'ft=/x'", "tiny, s32, b32, b16, l14, smoke, runlocal"),
    ("captioner.py:b32,bogus", "'bogus'", "smoke"),
    ("albef.py:tiny,foo", "'foo'", "tiny, smoke, runlocal, blind"),
    ("uniter.py:b16", "'b16'", "blind"),
    ("clip.py:ft=", "needs a value", "ft=DIR"),
])
def test_unknown_variant_word_is_refused_naming_it_and_the_valid_words(spec, word, valid):
  with pytest.raises(config_lib.ConfigError) as e:
    _load(spec)
  message = str(e.value)
  assert "\n" not in message and word in message and valid in message, message


def test_unknown_variant_word_exits_2_without_running(tmp_path):
  proc = _main("--config=configs/clip.py:tiny,foo", f"--workdir={tmp_path / 'w'}")
  _assert_one_line_error(proc, "unknown variant word 'foo'", "tiny, s32")
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("spec,check", [
    ("albef.py:tiny,blind,smoke", lambda c: c.model.blind and c.total_steps == 4),
    ("oscar.py:smoke,blind", lambda c: c.model.blind and c.data.source.variant == "small"),
    ("vilbert.py:runlocal", lambda c: not c.model.blind and c.total_steps == 4),
    ("clip.py: b16 , smoke", lambda c: c.model.image.patch_size == 16 and c.total_steps == 4),
    ("siglip.py:", lambda c: c.model.image.patch_size == 8 and c.total_steps > 100),
])
def test_known_variant_words_parse(spec, check):
  assert check(_load(spec))


def test_parse_variant_is_typed():
  from vlx.presets import sizes  # pylint: disable=g-import-not-at-top
  from vlx.presets.finetune import FINETUNE_KEYS  # pylint: disable=g-import-not-at-top
  from vlx.variant import parse_variant  # pylint: disable=g-import-not-at-top
  v = parse_variant("b16,smoke,ft=/a/b", sizes=sizes.SIZES, keys=FINETUNE_KEYS)
  assert (v.size, v.smoke, v.size_given, dict(v.values)) == ("b16", True, True, {"ft": "/a/b"})
  v = parse_variant("blind", sizes=("tiny",), words=("blind",))
  assert (v.size, v.smoke, v.size_given, v.words) == ("tiny", False, False, {"blind"})


# ---- Whole-config checks before anything runs (issue 17, items 9 and 17) --------------------


@pytest.mark.parametrize("override,needles", [
    ("checkpoint_every=0", ["checkpoint_every=0", ">= 1"]),
    ("log_every=0", ["log_every=0"]),
    ("eval_every=0", ["eval_every=0"]),
    ("total_steps=-5", ["total_steps=-5"]),
    ("batch_size=0", ["batch_size=0"]),
    ("accum_steps=3", ["batch_size=16", "accum_steps=3"]),
    ("keep_checkpoints=0", ["keep_checkpoints=0"]),
    ("mesh.fsdp=0", ["mesh.fsdp=0", "-1"]),
    ("mesh.data=-2", ["mesh.data=-2"]),
    ("optimizer.lr=-1.0", ["optimizer.lr=-1.0"]),
    ("optimizer.b2=1.5", ["optimizer.b2=1.5"]),
    ("optimizer.warmup_steps=-1", ["optimizer.warmup_steps=-1"]),
    ("optimizer.schedule=linear", ["'linear'", "cosine, constant"]),
    ("model.dtype=bf17", ["model.dtype='bf17'", "bfloat16", "bf16", "float32"]),
    ("data.max_len=20", ["data.max_len=20", "tokenize(32)"]),
    ("model.text.max_len=20", ["model.text.max_len=20", "data.max_len=32"]),
    ("model.image.patch_size=12", ["data.image_size=64", "model.image.patch_size=12"]),
])
def test_nonsensical_values_exit_2_with_one_line_before_anything_runs(tmp_path, override,
                                                                       needles):
  workdir = tmp_path / "w"
  proc = _main("--config=configs/clip.py:smoke", f"--workdir={workdir}", f"--config.{override}")
  _assert_one_line_error(proc, *needles)
  assert not workdir.exists(), "nothing may be written for a refused config"


def test_eval_limit_must_be_positive():
  from vlx import config_checks  # pylint: disable=g-import-not-at-top
  config = _load("coca.py:b16,smoke")
  config_lib.set_key(config, "evals.captioning.limit", "0")
  with pytest.raises(config_lib.ConfigError, match=r"evals.captioning.limit=0"):
    config_checks.check(config)


@pytest.mark.parametrize("alias,name", [("bf16", "bfloat16"), ("fp32", "float32"),
                                        ("f32", "float32"), ("fp16", "float16"),
                                        ("BFloat16", "bfloat16")])
def test_dtype_aliases_become_the_models_names(alias, name):
  from vlx import config_checks  # pylint: disable=g-import-not-at-top
  from vlx import build  # pylint: disable=g-import-not-at-top
  config = _load("coca.py:smoke")
  config_lib.set_key(config, "model.dtype", alias)
  config_checks.check(config)
  assert config.model.dtype == name
  build.build_model(config)


def test_every_shipped_config_passes_the_checks():
  from vlx import config_checks  # pylint: disable=g-import-not-at-top
  for family in ("clip", "siglip", "align", "coca", "captioner", "albef", "uniter", "oscar",
                 "vilbert", "lxmert"):
    sizes = ("tiny",) if family in ("albef", "uniter", "oscar", "vilbert", "lxmert") else \
        ("tiny", "s32", "b32", "b16", "l14")
    for size in sizes:
      for variant in (size, f"{size},smoke"):
        config_checks.check(_load(f"{family}.py:{variant}"))


def test_config_file_without_get_config_exits_2(tmp_path):
  path = tmp_path / "noget.py"
  path.write_text("x = 1\n")
  proc = _main(f"--config={path}", f"--workdir={tmp_path / 'w'}")
  _assert_one_line_error(proc, str(path), "get_config")


def test_config_file_that_raises_on_import_exits_2_naming_the_line(tmp_path):
  path = tmp_path / "broken.py"
  path.write_text("import ml_collections\n\nraise RuntimeError('half-edited')\n")
  proc = _main(f"--config={path}:tiny", f"--workdir={tmp_path / 'w'}")
  _assert_one_line_error(proc, str(path), "line 3", "RuntimeError", "half-edited")


def test_get_config_that_raises_exits_2_naming_where(tmp_path):
  path = tmp_path / "bug.py"
  path.write_text("def get_config(arg='tiny'):\n  return {}['nope']\n")
  proc = _main(f"--config={path}", f"--workdir={tmp_path / 'w'}")
  _assert_one_line_error(proc, "KeyError", "bug.py:2")


# ---- Help and flag spelling (issue 17, item 22) ---------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_flags_and_configs(flag):
  proc = _main(flag)
  assert proc.returncode == 0, proc.stderr
  for needle in ("usage:", "--config", "--workdir", "--mode", "--config.KEY",
                 "configs/clip.py", "configs/lxmert.py"):
    assert needle in proc.stdout, (needle, proc.stdout)


def test_help_for_a_config_lists_its_variants_and_keys():
  proc = _main("--config", "configs/siglip.py:b16,smoke", "--help")
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  assert "tiny, s32, b32, b16, l14, smoke, runlocal, ft=DIR, lit=DIR" in out, out
  assert "SigLIP" in out and "batch_size = 16" in out and "model.{" in out, out
  proc = _main("-h", "--config=configs/albef.py")
  assert proc.returncode == 0 and "tiny, smoke, runlocal, blind" in proc.stdout, proc.stdout


def test_flags_take_a_space_separated_value(tmp_path):
  flags, overrides = config_lib.parse_argv(
      ["--config", "configs/clip.py:smoke", "--workdir", "/w", "--config.optimizer.lr", "1e-4",
       "--config.model.bias_init", "-5.0", "--mode=eval"])
  assert flags == {"config": "configs/clip.py:smoke", "workdir": "/w", "mode": "eval"}
  assert overrides == [("optimizer.lr", "1e-4"), ("model.bias_init", "-5.0")]
  with pytest.raises(config_lib.ConfigError, match="--workdir needs a value"):
    config_lib.parse_argv(["--workdir", "--config=x.py"])
  # Through main: a space-separated config is read (the override error proves it was loaded).
  proc = _main("--config", "configs/clip.py:smoke", "--workdir", str(tmp_path / "w"),
               "--config.log_every", "0")
  _assert_one_line_error(proc, "log_every=0")


def test_missing_workdir_exits_2_with_usage(tmp_path):
  proc = _main("--config=configs/clip.py:smoke")
  assert proc.returncode == 2 and "--workdir is required" in proc.stderr
  assert "Traceback" not in proc.stderr


# Options each experiment script's --help must name (bench_vs_open_clip.py is tested with its
# own mode elsewhere).
EXPERIMENT_OPTIONS = {
    "bench_decode.py": ("--config", "--batch", "--max_len", "--beam_size", "--repeats",
                        "--workdir", "--prefix_lens", "--image_size"),
    "bench_frozen_grads.py": ("--config", "--lock", "--rounds", "--steps"),
    "bench_memory.py": ("--batch", "--loss_batch", "--embed", "--meshes"),
    "bench_steps.py": ("configs", "--rounds", "--steps", "--json"),
    "bench_train_step.py": ("--shape", "--batch", "--steps", "--dtype", "--mesh_fsdp"),
    "compare_fusion.py": ("--steps", "--root", "--families", "--blind"),
    "compare_video.py": ("--out", "--steps", "--qa_steps", "--paradigms", "--image", "--data_dir",
                         "--bench_rounds", "--bench_steps"),
    "launch_local.py": ("--num_processes", "--devices_per_process", "--port", "--timeout_s"),
    "parity_report.py": ("--help",),
    "plot_metrics.py": ("workdirs", "--out", "--keys"),
    "post_training.py": ("--seeds", "--workdir", "--samples", "--first_seed_samples", "--limit",
                         "--smoke", "--plot", "--pretrain_from", "--pretrain_each_seed",
                         "--test_frames"),
    "profile_step.py": ("--steps", "--top", "--trace_dir", "bench_train_step"),
    "tiny_losses.py": ("--steps", "--out", "--compare", "--configs"),
    "videomae_transfer.py": ("--pretrain", "--finetune", "--out"),
}


def test_every_experiment_script_is_listed():
  scripts = {p.name for p in (REPO / "experiments").glob("*.py")} - {"bench_vs_open_clip.py"}
  assert scripts == set(EXPERIMENT_OPTIONS), scripts ^ set(EXPERIMENT_OPTIONS)


@pytest.mark.parametrize("script", sorted(EXPERIMENT_OPTIONS))
def test_experiment_help_documents_options_and_does_no_work(script, tmp_path):
  """`--help` prints the script's purpose and options and exits 0 at once: no benchmark run,
  no file written, no optional dependency needed (torch is hidden from parity_report)."""
  env = subprocess_env(VLX_HUGEPAGE_MALLOC="0")
  if script == "parity_report.py":  # must not need torch to say what it does
    (tmp_path / "torch.py").write_text("raise ImportError('no torch here')\n")
    env["PYTHONPATH"] = f"{tmp_path}:{env.get('PYTHONPATH', '')}"
  proc = subprocess.run([PYTHON, f"experiments/{script}", "--help"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert out.startswith("usage:"), out[:500]
  for option in EXPERIMENT_OPTIONS[script]:
    assert option in out, (option, out)
  assert len(out.splitlines()) >= 4, out  # a description, not just the usage line


@pytest.mark.parametrize("key,value,needle", [
    ("model.name", "two_towr", "unknown model 'two_towr'"),
    ("objectives", "{'clip_typo': {'weight': 1.0}}", "unknown objective 'clip_typo'"),
])
def test_unknown_component_name_is_one_line(key, value, needle, tmp_path,
                                            shapes_data_dir):  # noqa: F811
  """A misspelt registered name (model, objective, ...) is the user's typo: one line naming it
  and the known names, exit 2, no traceback (the registries raise KeyError)."""
  proc = _main("--config=configs/clip.py:smoke", f"--workdir={tmp_path / 'w'}",
               f"--config.{key}={value}", f"--config.data.source.data_dir={shapes_data_dir}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("vlx: ")]
  assert len(errors) == 1 and needle in errors[0] and "known:" in errors[0], proc.stderr
