"""The package's import graph reads as the min-max problem: no module imports from a layer above it.

Layers, bottom up: shared pieces (losses, FOSC, validation, the parts vocabulary) < the inner
maximisations (attacks; weight perturbations) and the outer pieces (objectives, regularizers,
weightings) < models < training < evaluation, analysis, experiments, benchmarking < launch/. Every
import statement counts, including those inside functions.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "robust_jax"

# module prefix -> prefixes it must never import
FORBIDDEN = {
    "robust_jax.losses": ("robust_jax.attacks", "robust_jax.training", "robust_jax.analysis"),
    "robust_jax.fosc": ("robust_jax.attacks", "robust_jax.training", "robust_jax.analysis"),
    "robust_jax.parts": ("robust_jax.attacks", "robust_jax.training", "robust_jax.analysis",
                         "robust_jax.objectives", "robust_jax.regularizers"),
    "robust_jax.attacks": ("robust_jax.training", "robust_jax.analysis", "robust_jax.evaluation",
                           "robust_jax.objectives", "robust_jax.regularizers", "robust_jax.models"),
    "robust_jax.objectives": ("robust_jax.attacks", "robust_jax.training", "robust_jax.analysis"),
    "robust_jax.regularizers": ("robust_jax.attacks", "robust_jax.training", "robust_jax.analysis"),
    "robust_jax.weighting": ("robust_jax.attacks", "robust_jax.training", "robust_jax.analysis"),
    "robust_jax.weight_perturbation": ("robust_jax.attacks", "robust_jax.training",
                                       "robust_jax.analysis"),
    "robust_jax.weight_adversaries": ("robust_jax.attacks", "robust_jax.training",
                                      "robust_jax.analysis"),
    "robust_jax.models": ("robust_jax.attacks", "robust_jax.training", "robust_jax.analysis"),
    "robust_jax.training": ("robust_jax.analysis", "robust_jax.experiments",
                            "robust_jax.benchmarking"),
    "robust_jax": ("launch", "tests"),
}


def _module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(ROOT).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _imports(path: pathlib.Path):
  """Every module an import statement of ``path`` names (absolute; relative ones resolved)."""
  here = _module_name(path).split(".")
  package = here if path.name == "__init__.py" else here[:-1]
  return _imports_of_source(path.read_text(), package)


def _imports_of_source(src: str, package):
  tree = ast.parse(src)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
      yield base
      for alias in node.names:  # ``from robust_jax import attacks`` imports robust_jax.attacks
        yield f"{base}.{alias.name}"


def _within(name: str, prefix: str) -> bool:
  return name == prefix or name.startswith(prefix + ".")


def _edges():
  for path in sorted(PKG.rglob("*.py")):
    mod = _module_name(path)
    for imported in _imports(path):
      yield mod, imported


def _violations(edges):
  bad = []
  for mod, imported in edges:
    for owner, forbidden in FORBIDDEN.items():
      if _within(mod, owner) and any(_within(imported, f) for f in forbidden):
        bad.append(f"{mod} imports {imported}")
  return sorted(set(bad))


def test_the_import_graph_has_no_upward_edges():
  edges = list(_edges())
  assert ("robust_jax.training.step", "robust_jax.training.methods") in edges  # the parser works
  bad = _violations(edges)
  assert not bad, "\n".join(bad)


def test_the_checker_reports_upward_edges(tmp_path):
  """The graph check is not vacuous: upward imports (also relative and function-level) are found."""
  probe = tmp_path / "probe.py"
  probe.write_text("def f():\n  from robust_jax.analysis import landscape\n")
  edges = [("robust_jax.training.probe", i) for i in _imports_of_source(probe.read_text(),
                                                                          ["robust_jax", "training"])]
  assert _violations(edges) == ["robust_jax.training.probe imports robust_jax.analysis",
                                "robust_jax.training.probe imports robust_jax.analysis.landscape"]
  rel = list(_imports_of_source("from ..attacks import pgd\n", ["robust_jax", "objectives_pkg"]))
  assert _violations([("robust_jax.objectives", i) for i in rel]) == [
      "robust_jax.objectives imports robust_jax.attacks",
      "robust_jax.objectives imports robust_jax.attacks.pgd"]


def test_the_step_names_no_method_and_no_kind():
  """``train_step`` calls parts: no method name or part kind appears as a string in its builder."""
  from robust_jax import regularizers, weight_adversaries, weighting  # pylint: disable=import-outside-toplevel
  from robust_jax.training import adversary, methods  # pylint: disable=import-outside-toplevel
  names = set(methods.METHODS) | set(adversary.CORES) | set(adversary.ATTACK_STARTS)
  for reg in (adversary.STOP_RULES, adversary.BUDGETS, weighting.WEIGHTINGS,
              regularizers.REGULARIZERS, weight_adversaries.WEIGHT_ADVERSARIES):
    names |= set(reg.names())
  assert {"dart", "sampa", "elle_a", "fosc", "gairat"} <= names
  tree = ast.parse((PKG / "training" / "step.py").read_text())
  builder = next(n for n in ast.walk(tree)
                 if isinstance(n, ast.FunctionDef) and n.name == "make_train_step")
  docstrings = {ast.get_docstring(n, clean=False) for n in ast.walk(builder)
                if isinstance(n, ast.FunctionDef)}
  strings = {n.value for n in ast.walk(builder)
             if isinstance(n, ast.Constant) and isinstance(n.value, str)} - docstrings
  assert not strings & names, sorted(strings & names)
