"""Executes a notebook of notebooks/ with its parameters cell replaced (shared by the notebook tests)."""

import os
import sys

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "notebooks")


def run_notebook(name: str, parameters: str, *, timeout: int = 600):
  """Runs ``notebooks/<name>`` with the cell tagged ``parameters`` replaced by ``parameters``.

  The kernel is this interpreter's (the venv's ``python`` first on PATH). Raises
  ``nbclient.exceptions.CellExecutionError`` if any cell fails; returns the executed notebook.
  """
  nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
  assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
  tagged[0].source = parameters
  os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
  os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
  client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                          resources={"metadata": {"path": NOTEBOOKS}})
  client.execute()
  return nb


def assert_committed_without_outputs(name: str):
  """Committed notebooks carry no stale outputs."""
  nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.get("outputs") and cell.get("execution_count") is None, name
