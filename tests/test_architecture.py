"""The package's shape, read from its source (pure AST, no import of vlx: about a second).

- No import circle among vlx modules, counting imports inside functions: the core reaches
  components only through the registry's catalogue of module paths (vlx/components.py).
- Weight conversion, `pretrained` and `predict` build models through vlx/build.py and never
  reach the training loop, even through the components the registry imports for them.
- The core names no model family; what it still names is listed, with the reason, in
  `KNOWN_FAMILY_WORDS_IN_CORE`, so the work left is visible and the list can only shrink.
"""

from __future__ import annotations

import ast
import io
import pathlib
import re
import tokenize
from typing import Dict, List, Optional, Set, Tuple

VLX = pathlib.Path(__file__).resolve().parents[1] / "vlx"

# ---- The import graph ----------------------------------------------------------------


def module_files(pkg_dir: pathlib.Path = VLX) -> Dict[str, pathlib.Path]:
  """Dotted module name -> file, for every .py under the package (a package is its __init__)."""
  out = {}
  for path in sorted(pkg_dir.rglob("*.py")):
    parts = list(path.relative_to(pkg_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    out[".".join(parts)] = path
  return out


def _owner(name: str, modules) -> Optional[str]:
  """The module a dotted name lives in (`vlx.families.fusion.model.IGNORE` -> `vlx.families.fusion.model`)."""
  while name and name not in modules:
    name = name.rpartition(".")[0]
  return name or None


def imported_names(module: str, path: pathlib.Path) -> Set[str]:
  """Every dotted name the module imports, wherever the statement is (functions included):
  `import a.b`, `from a import b` (a and a.b: b may be a submodule), relative imports resolved,
  and `importlib.import_module("a.b")` with a literal path."""
  tree = ast.parse(path.read_text(), str(path))
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      names.add(base)
      names.update(f"{base}.{alias.name}" for alias in node.names)
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "import_module" and node.args
          and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
      names.add(node.args[0].value)
  return names


def import_graph(pkg_dir: pathlib.Path = VLX) -> Dict[str, Set[str]]:
  """module -> the package's modules it imports. A package's __init__ importing its own
  submodules is left out (re-exporting them is no loop of design; the issue's measure,
  /work/shared/tools/imports.py, counts the same way)."""
  modules = module_files(pkg_dir)
  graph = {}
  for module, path in modules.items():
    targets = {_owner(n, modules) for n in imported_names(module, path)}
    graph[module] = {t for t in targets
                     if t and t != module and not t.startswith(module + ".")}
  return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
  """One import circle as [a, b, ..., a], or None."""
  state: Dict[str, int] = {}  # 1: on the current path, 2: done
  path: List[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def catalogue_modules(pkg_dir: pathlib.Path = VLX) -> List[str]:
  """The module paths vlx/components.py lists (what the registry imports on first lookup)."""
  tree = ast.parse((pkg_dir / "components.py").read_text())
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODULES"
                                            for t in node.targets):
      return list(ast.literal_eval(node.value))
  raise AssertionError("vlx/components.py defines no MODULES")


def reachable(graph: Dict[str, Set[str]], starts) -> Dict[str, str]:
  """Every module reachable from `starts` -> the module that first imported it."""
  seen = {s: "" for s in starts}
  todo = list(starts)
  while todo:
    node = todo.pop()
    for nxt in graph.get(node, ()):
      if nxt not in seen:
        seen[nxt] = node
        todo.append(nxt)
  return seen


def test_no_import_circle_among_vlx_modules():
  graph = import_graph()
  assert len(graph) > 50 and "vlx.registry" in graph  # the walk found the package
  cycle = find_cycle(graph)
  assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_import_circle_with_a_relative_import(tmp_path):
  """The walk itself: a relative, function-level import that closes a loop is seen."""
  pkg = tmp_path / "pkg"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("")
  (pkg / "a.py").write_text("from pkg.sub import b\n")
  (pkg / "sub" / "b.py").write_text("def f():\n  from .. import a\n")
  assert find_cycle(import_graph(pkg)) == ["pkg.a", "pkg.sub.b", "pkg.a"]


TRAINING_LOOP = ("vlx.train.trainer", "vlx.train.step")


def test_convert_pretrained_and_predict_do_not_reach_the_training_loop():
  graph = import_graph()
  # At run time a registry lookup imports the catalogue's modules: count them as imported.
  graph["vlx.registry"] = graph["vlx.registry"] | set(catalogue_modules())
  starts = [m for m in graph if m == "vlx.convert" or m.startswith("vlx.convert.")]
  starts += ["vlx.pretrained", "vlx.predict"]
  assert len(starts) > 4
  via = reachable(graph, starts)
  for bad in TRAINING_LOOP:
    if bad in via:
      chain = [bad]
      while via[chain[-1]]:
        chain.append(via[chain[-1]])
      raise AssertionError(f"{bad} is imported by " + " <- ".join(chain))


# ---- No family name in the core ------------------------------------------------------

CORE = ("vlx/registry.py", "vlx/build.py", "vlx/train/step.py", "vlx/train/task.py",
        "vlx/train/trainer.py",
        "vlx/train/checkpoint.py", "vlx/train/metrics_writer.py", "vlx/train/workdir.py",
        "vlx/parallel/mesh.py", "vlx/runtime.py")
# Not listed: train/optimizer.py and train/curriculum.py say "clip" for gradient clipping.

# Model families, their heads and tasks, and the family details that must stay out of the
# core (an EMA teacher is ALBEF's). Whole words of identifiers, strings and comments;
# CamelCase is split (TwoTower -> two_tower).
FAMILY_WORDS = ("clip", "siglip", "align", "coca", "captioner", "captioning", "albef",
                "uniter", "oscar", "vilbert", "visualbert", "lxmert", "bert", "fusion",
                "two_tower", "dual_encoder", "vqa", "itc", "itm", "mlm", "grounding",
                "teacher", "ema")

# (core file, word) -> why it is still there. Remove an entry when its word leaves the file.
KNOWN_FAMILY_WORDS_IN_CORE: Dict[Tuple[str, str], str] = {}


def family_words(path: pathlib.Path) -> Dict[str, List[int]]:
  """family word -> the lines naming it (in an identifier, a string or a comment)."""
  found: Dict[str, Set[int]] = {}
  patterns = {w: re.compile(rf"(?<![a-z0-9]){w}(?![a-z0-9])") for w in FAMILY_WORDS}
  for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
    if tok.type not in (tokenize.NAME, tokenize.STRING, tokenize.COMMENT):
      continue
    # As written (SigLIP -> siglip) and with CamelCase split (TwoTower -> two_tower).
    for text in (tok.string.lower(), re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", tok.string).lower()):
      for word, pattern in patterns.items():
        for m in pattern.finditer(text):
          found.setdefault(word, set()).add(tok.start[0] + text.count("\n", 0, m.start()))
  return {word: sorted(lines) for word, lines in found.items()}


def test_no_family_name_in_the_core():
  root = VLX.parent
  unexpected, stale = [], []
  for rel in CORE:
    found = family_words(root / rel)
    for word, lines in sorted(found.items()):
      if (rel, word) not in KNOWN_FAMILY_WORDS_IN_CORE:
        unexpected.append(f"{rel}:{lines[0]} names {word!r} ({len(lines)} times)")
    stale += [f"{f}: {w!r}" for f, w in KNOWN_FAMILY_WORDS_IN_CORE if f == rel and w not in found]
  assert not unexpected, ("a family name in the core (move it into the family, or reword):\n"
                          + "\n".join(unexpected))
  assert not stale, ("KNOWN_FAMILY_WORDS_IN_CORE lists words the core no longer names: "
                     "remove them\n" + "\n".join(stale))
  assert {f for f, _ in KNOWN_FAMILY_WORDS_IN_CORE} <= set(CORE)
