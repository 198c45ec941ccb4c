"""Names resolve through the registry: built-ins from its catalogue, one's own components from
the modules `config.imports` names (no model is built here: a few seconds)."""

import ml_collections
import pytest

from vlx import build, registry

TOY_MODULE = """
from vlx import registry

@registry.MODELS.register("test_registry_toy")
def toy(**kwargs):
  return ("toy", kwargs)
"""


def test_config_imports_register_a_component_from_outside_vlx(tmp_path, monkeypatch):
  (tmp_path / "my_family_for_test_registry.py").write_text(TOY_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  assert "test_registry_toy" not in registry.MODELS
  config = ml_collections.ConfigDict({
      "imports": ("my_family_for_test_registry",),
      "model": {"name": "test_registry_toy", "width": 3}})
  assert build.build_model(config) == ("toy", {"width": 3})
  assert "test_registry_toy" in registry.MODELS.names()


def test_builtin_names_resolve_and_unknown_ones_say_what_is_known():
  assert {"two_tower", "coca", "fusion"} <= set(registry.MODELS.names())
  assert "clip" in registry.OBJECTIVES and "retrieval" in registry.EVALUATORS
  with pytest.raises(KeyError, match="did you mean two_tower"):
    registry.MODELS.get("two_towers")


def test_a_config_import_that_does_not_exist_is_named():
  config = ml_collections.ConfigDict({"imports": ("no_such_module_for_vlx",)})
  with pytest.raises(ImportError, match="config.imports: cannot import 'no_such_module_for_vlx'"):
    build.import_components(config)
  build.import_components(ml_collections.ConfigDict({}))  # no key: built-ins only
