"""Every three-decimal figure the README and the results pages quote comes from a committed
artifact: a JSON or CSV file under docs/, or a page a command generated (one that names
the command that made it in its first lines)."""

import glob
import os
import re

from tests.tiny import ROOT

NUMBER = re.compile(r"(?<![\d.])-?\d+\.\d{3}(?!\d)")


def _generated_pages() -> list[str]:
  pages = []
  for path in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True):
    with open(path, encoding="utf-8") as f:
      head = "".join(f.readline() for _ in range(6))
    if "Made by `python -m" in head:
      pages.append(path)
  return pages


def _artifact_values() -> set[float]:
  values: set[float] = set()
  paths = _generated_pages()
  for ext in ("json", "csv"):
    paths += glob.glob(os.path.join(ROOT, "docs", "**", f"*.{ext}"), recursive=True)
  for path in paths:
    with open(path, encoding="utf-8") as f:
      text = f.read()
    for match in re.finditer(r"-?\d+\.\d+(?:e-?\d+)?", text):
      v = float(match.group())
      values.update({round(v, 3), round(abs(v), 3)})
  return values


def test_every_quoted_figure_is_in_a_committed_artifact():
  known = _artifact_values()
  quoted = [os.path.join(ROOT, "README.md")] + [
      p for p in glob.glob(os.path.join(ROOT, "docs", "results", "*.md"))
      if p not in _generated_pages()]
  missing = []
  for path in quoted:
    with open(path, encoding="utf-8") as f:
      text = f.read().replace("−", "-")
    for match in NUMBER.finditer(text):
      if round(abs(float(match.group())), 3) not in known:
        missing.append(f"{os.path.relpath(path, ROOT)}: {match.group()}")
  assert not missing, "figures in no committed artifact: " + ", ".join(missing[:20])


def test_generated_pages_name_their_command():
  pages = _generated_pages()
  assert any(p.endswith(os.path.join("dyck", "report.md")) for p in pages), pages
  for path in pages:
    with open(path, encoding="utf-8") as f:
      assert "python -m experiments." in "".join(f.readline() for _ in range(6))
