"""The import layering: data < models < proxies < pipeline < experiments < the scripts.

No module imports a package above its own, at module level or inside a function (an
import hidden in a function is an upward dependency all the same). Library packages do not
turn errors into exits: only experiments/ and the scripts use the command-line layer."""

import ast
import os

from tests.tiny import ROOT

LAYERS = ("data", "models", "proxies", "pipeline", "experiments")
SCRIPTS = ("train.py", "evaluate.py")


def imported_packages(path: str) -> set[str]:
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out |= {alias.name.split(".")[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      out.add(node.module.split(".")[0])
  return out


def modules(package: str):
  """Every module of `package`, its subpackages' (pipeline/tasks/) included."""
  for directory, _, names in sorted(os.walk(os.path.join(ROOT, package))):
    for name in sorted(names):
      if name.endswith(".py"):
        yield os.path.relpath(os.path.join(directory, name), ROOT)


def test_no_package_imports_one_above_it():
  upward = []
  for rank, package in enumerate(LAYERS):
    for path in modules(package):
      for imported in imported_packages(os.path.join(ROOT, path)):
        if imported in LAYERS[rank + 1:] or imported in {s[:-3] for s in SCRIPTS}:
          upward.append(f"{path} imports {imported}")
  assert not upward, upward


def test_library_layers_raise_domain_errors_not_exits():
  """sys.exit and the command-line module belong to the entry points."""
  offenders = []
  for package in LAYERS[:-1]:
    for path in modules(package):
      text = open(os.path.join(ROOT, path), encoding="utf-8").read()
      if "sys.exit(" in text or "UsageError" in text:
        offenders.append(path)
  assert not offenders, offenders


def test_the_checker_sees_an_upward_import(tmp_path):
  """The test above can fail: an import inside a function is found."""
  bad = tmp_path / "bad.py"
  bad.write_text("def f():\n  from experiments import cli\n  import pipeline.tasks\n")
  assert imported_packages(str(bad)) == {"experiments", "pipeline"}
