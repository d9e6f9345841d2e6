"""notebooks/tutorial.ipynb runs from a clean kernel without an error, and is committed with
the outputs of such a run (so that it reads where the repository is browsed).

  python -m tests.test_notebook    # executes it in a scratch folder and writes the outputs back

The kernel is the interpreter running the tests (a kernel spec of our own: the installed
one may name whatever `python` is first on PATH), in a scratch folder, so the run the
notebook trains lands under that folder's runs/."""

from __future__ import annotations

import json
import os
import sys
import tempfile

import nbformat
import pytest
from nbclient import NotebookClient

from tests.tiny import ROOT, env

NOTEBOOK = os.path.join(ROOT, "notebooks", "tutorial.ipynb")
MAX_BYTES = 1_000_000  # small enough to diff and to render in a browser
KERNEL = "tutorial-python"


def _kernel_spec(folder: str) -> str:
  """A Jupyter data folder whose one kernel runs this interpreter."""
  spec = os.path.join(folder, "kernels", KERNEL)
  os.makedirs(spec, exist_ok=True)
  with open(os.path.join(spec, "kernel.json"), "w", encoding="utf-8") as f:
    json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": "Python 3", "language": "python"}, f)
  return folder


def execute(path: str, cwd: str) -> "nbformat.NotebookNode":
  """The notebook at `path` run top to bottom in a fresh kernel whose working folder is
  `cwd`; raises nbclient's CellExecutionError at the first cell that fails."""
  notebook = nbformat.read(path, as_version=4)
  for cell in notebook.cells:  # timestamps of an earlier run: noise in every diff
    cell.metadata.pop("execution", None)
  saved = dict(os.environ)
  os.environ.update({**env(), "JUPYTER_PATH": _kernel_spec(os.path.join(cwd, ".jupyter"))})
  try:
    NotebookClient(notebook, timeout=600, kernel_name=KERNEL, record_timing=False,
                   resources={"metadata": {"path": cwd}}).execute()
  finally:
    os.environ.clear()
    os.environ.update(saved)
  notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                     "name": "python3"}  # what a reader's Jupyter has
  return notebook


def _shape(notebook) -> list[list[str]]:
  """Per code cell, the MIME types of what it displays (its figures); printed text is left
  out, as how a kernel splits a stream into outputs varies from run to run."""
  return [["+".join(sorted(o.data)) for o in cell.outputs if "data" in o]
          for cell in notebook.cells if cell.cell_type == "code"]


def test_the_committed_notebook_holds_the_outputs_of_one_clean_run():
  assert os.path.getsize(NOTEBOOK) < MAX_BYTES
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in notebook.cells if c.cell_type == "code"]
  assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
  assert not [o for c in code for o in c.outputs if o.output_type == "error"]
  images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
  # sweep curves, accuracy by depth, attention patterns, the scan's heat map and curves
  assert len(images) >= 6, len(images)
  text = "".join(o.get("text", "") for c in code for o in c.outputs)
  assert "run directory: runs/" in text and "flagged setting(s)" in text


@pytest.mark.slow  # trains a model and runs a scan: minutes
def test_the_notebook_runs_from_a_clean_kernel(tmp_path):
  ran = execute(NOTEBOOK, str(tmp_path))
  assert _shape(ran) == _shape(nbformat.read(NOTEBOOK, as_version=4)), \
      "the committed outputs are not those of this notebook: rerun python -m tests.test_notebook"
  assert (tmp_path / "runs" / "tutorial-dyck-k4-m4" / "scan" / "figures" / "heatmap.png").exists()


if __name__ == "__main__":
  with tempfile.TemporaryDirectory() as scratch:
    nbformat.write(execute(NOTEBOOK, scratch), NOTEBOOK)
  print(f"wrote {NOTEBOOK} ({os.path.getsize(NOTEBOOK):,} bytes)")
