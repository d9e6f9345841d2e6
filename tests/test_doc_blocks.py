"""Every code block of README.md and docs/guide/*.md runs as written.

Fences: ```python blocks run as scripts, ```sh blocks by bash (the whole block as one
script, so an `export` reaches the lines after it), ```text blocks are printed output, with
nothing to run; any other fence is an error, so that no block goes untested unnoticed.

Where: the pages in order (README.md first, then the guides by name) in one scratch folder,
as a reader on a fresh checkout runs them: the repository's train.py and evaluate.py linked
in, the tiny data in runs/tfds (copied, not regenerated), `.venv/bin/python` and `python` on
PATH the interpreter that runs the tests, the repository on PYTHONPATH. The quick start
trains runs/dyck-k20-m10-s0 there (the tiny run, see SUBSTITUTIONS) and the blocks after it
use it as they would the default run (the two-process train.py of the scale guide resumes
it: both processes join and restore its checkpoint).

What is not run is said in the markdown, in an HTML comment on the lines just before the
block (invisible where the page renders):
  <!-- no-run: reason -->                  the block is not run
  <!-- no-run `prefix`: reason -->         its commands (a line, or one part of an `&&`
                                           chain) that begin with `prefix` are not run
A marker must name its reason and sit before a block, and a prefix must match a command of
it (`test_markers_...`), so a marker cannot outlive what it excuses.

SUBSTITUTIONS turn commands that take minutes on the default run into the same commands on
the tiny run; each must still apply (`test_every_substitution_applies`)."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from tests.conftest import TINY_TRAIN
from tests.tiny import DATA_FLAGS, ROOT, env

PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in
                              glob.glob(os.path.join(ROOT, "docs", "guide", "*.md")))]
RUN = "runs/dyck-k20-m10-s0"  # the default run the docs name; here, the tiny one
LANGUAGES = {"python": "run", "sh": "run", "text": "output"}
MARKER = re.compile(r"<!-- no-run(?: `([^`]+)`)?: *(.*?) *-->")
FENCE = re.compile(r"^```(\S*)\s*$")
FLAGS = r"((?:[ \t]+--[^\s;&|]+)*)"  # a command's flags, up to a shell operator


def _free_port() -> str:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return str(s.getsockname()[1])


# (pattern, replacement, why). The replacement appends flags after the command's own, so
# that they win (argparse keeps the last value of a flag).
SUBSTITUTIONS = [
    (r"train\.py" + FLAGS,
     lambda m: m.group(0) + " " + " ".join([*DATA_FLAGS, *TINY_TRAIN, f"--workdir={RUN}"]),
     "the tiny run (seconds) where the default one trains for minutes, in the default "
     "run's directory so that the blocks after it find it"),
    (r"-m experiments\.scan" + FLAGS,
     lambda m: m.group(0) + " --families=svd,onehot --draws=1",
     "two families and one chance draw: every family with three draws takes minutes even "
     "on the tiny run"),
    (r"localhost:12355", lambda m: "localhost:" + _free_port(),
     "a free port: another job on the machine may hold 12355"),
]


@dataclasses.dataclass
class Block:
  page: str
  line: int  # of the opening fence, 1-based
  language: str
  code: str
  skip: str | None = None  # the reason, when the whole block is not run
  dropped: dict[str, str] = dataclasses.field(default_factory=dict)  # prefix -> reason

  @property
  def where(self) -> str:
    return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
  """The fenced blocks of one page, with the no-run markers just before each. Raises
  ValueError for a marker without a reason or one that precedes no block."""
  lines = open(os.path.join(ROOT, page), encoding="utf-8").read().splitlines()
  out, pending, i = [], [], 0
  while i < len(lines):
    line = lines[i]
    marker = MARKER.fullmatch(line.strip())
    fence = FENCE.match(line)
    if marker:
      if not marker.group(2):
        raise ValueError(f"{page}:{i + 1}: a no-run marker without its reason")
      pending.append((marker.group(1), marker.group(2), i + 1))
    elif fence:
      end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
      block = Block(page, i + 1, fence.group(1), "\n".join(lines[i + 1:end]) + "\n")
      for prefix, reason, _ in pending:
        if prefix is None:
          block.skip = reason
        else:
          block.dropped[prefix] = reason
      out.append(block)
      pending, i = [], end
    elif line.strip() and pending:
      raise ValueError(f"{page}:{pending[0][2]}: a no-run marker that precedes no block")
    i += 1
  if pending:
    raise ValueError(f"{page}:{pending[0][2]}: a no-run marker that precedes no block")
  return out


def all_blocks() -> list[Block]:
  return [b for page in PAGES for b in blocks(page)]


def shell_script(block: Block) -> tuple[str, set[str], set[int]]:
  """The block's script as run: the commands its markers drop left out, SUBSTITUTIONS
  applied. Returns (script, the prefixes that dropped something, the substitutions that
  applied, by index)."""
  used, substituted, kept = set(), set(), []
  for line in block.code.splitlines():
    parts = []
    for part in line.split("&&"):
      prefix = next((p for p in block.dropped if part.strip().startswith(p)), None)
      if prefix is None:
        parts.append(part)
      else:
        used.add(prefix)
    line = "&&".join(parts).strip()
    for index, (pattern, replace, _) in enumerate(SUBSTITUTIONS):
      line, n = re.subn(pattern, replace, line)
      if n:
        substituted.add(index)
    if line:
      kept.append(line)
  return "\n".join(kept) + "\n", used, substituted


def test_every_block_is_python_sh_or_text():
  found = all_blocks()
  assert any(b.page == "README.md" and b.language == "python" for b in found)
  odd = [f"{b.where} ```{b.language}" for b in found if b.language not in LANGUAGES]
  assert not odd, f"fences this test cannot run or call output: {odd}"


def test_markers_name_a_reason_and_match_their_block(tmp_path):
  for block in all_blocks():
    if block.language == "sh" and block.dropped:
      _, used, _ = shell_script(block)
      assert used == set(block.dropped), \
          f"{block.where}: no command begins with {sorted(set(block.dropped) - used)}"
    assert not (block.dropped and block.language != "sh"), block.where
  page = tmp_path / "page.md"
  for text, error in (("<!-- no-run: -->\n```sh\nls\n```\n", "without its reason"),
                      ("<!-- no-run: why -->\nsome prose\n```sh\nls\n```\n", "precedes no")):
    page.write_text(text)
    with pytest.raises(ValueError, match=error):
      blocks(str(page))


def test_every_substitution_applies():
  applied = set()
  for block in all_blocks():
    if block.language == "sh" and not block.skip:
      applied |= shell_script(block)[2]
  stale = [SUBSTITUTIONS[i][0] for i in range(len(SUBSTITUTIONS)) if i not in applied]
  assert not stale, f"substitutions no block needs any more: {stale}"


def _scratch(tmp_path, data_from) -> tuple[str, dict]:
  """A folder a reader's checkout looks like to the blocks, and the environment to run
  them in."""
  work = tmp_path / "checkout"
  bin_dir = work / ".venv" / "bin"
  bin_dir.mkdir(parents=True)
  wrapper = bin_dir / "python"  # the interpreter running the tests, by the docs' name
  wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
  wrapper.chmod(0o755)
  for name in ("train.py", "evaluate.py"):
    os.symlink(os.path.join(ROOT, name), work / name)
  shutil.copytree(data_from / "runs" / "tfds", work / "runs" / "tfds")
  return str(work), {**env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _run(block: Block, work: str, environment: dict) -> subprocess.CompletedProcess:
  if block.language == "python":
    path = os.path.join(work, f"block_{block.page.replace('/', '_')}_{block.line}.py")
    with open(path, "w", encoding="utf-8") as f:
      f.write(block.code)
    command = [sys.executable, path]
  else:
    command = ["bash", "-euo", "pipefail", "-c", shell_script(block)[0]]
  return subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True,
                        timeout=600)


def _check_api_block(stdout: str, work: str) -> None:
  """What the README's API block promises: its rows, in order; a second evaluation of the
  same shapes compiles nothing; the saved sweep is on disk."""
  lines = stdout.splitlines()
  assert [line.split()[:2] for line in lines[:8]] == [
      [split, str(rank)] for split in ("iid", "unseen_depth") for rank in (1, 2, 4, 8)]
  first, second = re.search(r"(\d+) compilations; (\d+) for a second", stdout).groups()
  assert int(first) > 0 and int(second) == 0
  assert os.path.exists(os.path.join(work, RUN, "eval", "svd_both_layers.npz"))


def test_every_block_runs_as_written(trained, tmp_path):
  """Runs every block in order and reports every one that fails (not only the first)."""
  work, environment = _scratch(tmp_path, trained[0])
  failures, ran, skipped = [], 0, []
  for block in all_blocks():
    if LANGUAGES.get(block.language) != "run" or block.skip:
      if block.skip:
        skipped.append(f"{block.where} ({block.skip})")
      continue
    done = _run(block, work, environment)
    ran += 1
    if done.returncode != 0:
      failures.append(f"{block.where} exited {done.returncode}:\n{done.stderr[-3000:]}")
    elif block.page == "README.md" and "run.evaluate(sweep" in block.code:
      _check_api_block(done.stdout, work)
  print(f"ran {ran} blocks; not run, by their markers: {skipped}")
  assert ran >= 8 and not failures, "\n\n".join(failures)
  assert os.path.exists(os.path.join(work, RUN, "scan", "report.md"))  # the scan ran
