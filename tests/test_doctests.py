"""Every ``>>>`` example in the library runs as a doctest: one test per module of robust_jax.

The modules are those of ``pkgutil.walk_packages``, plus those of the package's directories
without an ``__init__.py`` (namespace packages, which ``pkgutil`` does not descend into). A
module whose source holds no ``>>>`` is skipped without being imported; the others are imported
(after tests/conftest.py has set the project's XLA flags) and their examples run with
``ELLIPSIS | NORMALIZE_WHITESPACE``, in a copy of the module's globals, as ``doctest.testmod``
does. A failure shows doctest's report.
"""

import doctest
import importlib
import io
import os
import pkgutil

import pytest

import robust_jax

_ROOT = os.path.dirname(robust_jax.__file__)
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_name(path):
  """The module of a .py file of the package (``attacks/__init__.py`` -> robust_jax.attacks)."""
  parts = os.path.relpath(path, _ROOT)[:-len(".py")].split(os.sep)
  return ".".join(["robust_jax"] + [p for p in parts if p != "__init__"])


def _module_names():
  names = {"robust_jax"}
  names.update(m.name for m in pkgutil.walk_packages(robust_jax.__path__, "robust_jax."))
  # pkgutil does not descend into a directory without an __init__.py (a namespace package, such
  # as robust_jax/training today): its modules are added from the directory.
  for dirpath, dirnames, _ in os.walk(_ROOT):
    dirnames[:] = [d for d in dirnames if d != "__pycache__"]
    if dirpath != _ROOT and not os.path.exists(os.path.join(dirpath, "__init__.py")):
      names.update(_module_name(os.path.join(dirpath, m.name + ".py"))
                   for m in pkgutil.iter_modules([dirpath]) if not m.ispkg)
  return sorted(names)


MODULES = _module_names()


def _source(name):
  spec = importlib.util.find_spec(name)
  with open(spec.origin, encoding="utf-8") as f:
    return f.read()


def _find(module):
  return [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__)
          if t.examples]


def test_every_module_is_collected():
  # Every .py file of the package is one of MODULES, so no example escapes the suite.
  files = set()
  for dirpath, dirnames, filenames in os.walk(_ROOT):
    dirnames[:] = [d for d in dirnames if d != "__pycache__"]
    files.update(_module_name(os.path.join(dirpath, f)) for f in filenames if f.endswith(".py"))
  assert files == set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  if ">>>" not in _source(name):
    pytest.skip("no examples")
  module = importlib.import_module(name)
  tests = _find(module)
  if not tests:
    pytest.skip("no examples in docstrings")
  out = io.StringIO()
  runner = doctest.DocTestRunner(optionflags=_FLAGS)
  failed = attempted = 0
  for t in tests:
    result = runner.run(t, out=out.write)
    failed, attempted = failed + result.failed, attempted + result.attempted
  assert attempted > 0
  assert failed == 0, f"{failed} of {attempted} examples failed:\n{out.getvalue()}"


def test_the_factory_keeps_its_examples():
  from robust_jax.attacks import _factory  # pylint: disable=g-import-not-at-top
  assert sum(len(t.examples) for t in _find(_factory)) >= 5
