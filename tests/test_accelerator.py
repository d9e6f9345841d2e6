"""bench/accelerator.py, the one command a lent GPU runs, dry-run on the CPU at tiny sizes
so that it cannot rot between lendings: every part runs and is recorded, and the equality
check compares with a reference written on this CPU."""

import json
import os

from tests.tiny import ROOT, run


def test_the_accelerator_script_dry_runs_every_part(trained, tmp_path):
  cwd, run_dir = trained
  script = os.path.join(ROOT, "bench", "accelerator.py")
  reference = tmp_path / "reference.json"
  wrote = run(script, "--dry_run", f"--run={run_dir}", f"--reference={reference}",
              "--write_reference", f"--out={tmp_path}", cwd=cwd)
  assert wrote.returncode == 0, wrote.stderr
  result = run(script, "--dry_run", f"--run={run_dir}", f"--reference={reference}",
               f"--out={tmp_path}", f"--data_dir={tmp_path / 'tfds'}", cwd=cwd)
  assert result.returncode == 0, result.stderr
  found = json.loads((tmp_path / "accelerator.json").read_text())
  parts = found["parts"]
  assert set(parts) == {"train", "throughput", "mfu", "sweep", "memory", "sae", "equality"}
  assert not [name for name, p in parts.items() if "error" in p], parts
  assert parts["equality"]["max_abs_difference"] <= 1e-6  # the same machine: equal
  assert all(line.startswith(f"[{found['device']}]") for line in result.stdout.splitlines()
             if line.startswith("["))
