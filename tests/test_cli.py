"""train.py, evaluate.py and `python -m experiments.dyck_data` end to end on a tiny config, and bad input."""

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios

import pytest

import evaluate
from data import dyck, dyck_splits
from pipeline import errors, rundir, tasks

from tests import tiny
from tests.tiny import DATA_FLAGS as TINY_DATA, ROOT, run

from tests.conftest import TINY_TRAIN as TINY_MODEL


def test_train_writes_config_metrics_and_checkpoints(trained):
  cwd, run_dir = trained
  config = json.loads((run_dir / "config.json").read_text())
  assert config["data"]["max_depth"] == 4 and config["model"]["d_model"] == 16
  rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [10, 20, 30]
  assert all("iid_accuracy" in r and "tokens_per_s" in r for r in rows)
  assert sorted(os.listdir(run_dir / "checkpoints")) == ["10", "20", "30"]


def test_rerun_resumes_instead_of_starting_over(trained):
  cwd, run_dir = trained
  result = run(os.path.join(ROOT, "train.py"), "--task=dyck", *TINY_DATA, *TINY_MODEL,
               cwd=cwd)
  assert result.returncode == 0, result.stderr
  assert "resumed from step 30" in result.stdout


def test_resume_may_change_how_often_it_logs_evaluates_and_saves(trained):
  """Those three used to make a resumed run 'another config'; they do not change the
  parameters. (On a copy of the run, beside it so that its data is found.)"""
  cwd, run_dir = trained
  shutil.copytree(run_dir, cwd / "runs" / "cadence")
  cadence = ["--log_every=5", "--eval_every=15", "--checkpoint_every=15"]
  result = run(os.path.join(ROOT, "train.py"), "--task=dyck", *TINY_DATA, *TINY_MODEL,
               *cadence, "--workdir=runs/cadence", cwd=cwd)
  assert result.returncode == 0, result.stderr
  assert "resumed from step 30" in result.stdout
  train = json.loads((cwd / "runs" / "cadence" / "config.json").read_text())["train"]
  assert (train["log_every"], train["eval_every"], train["checkpoint_every"]) == (5, 15, 15)
  result = run(os.path.join(ROOT, "train.py"), "--task=dyck", *TINY_DATA, *TINY_MODEL,
               *cadence, "--steps=40", "--workdir=runs/cadence", cwd=cwd)
  assert result.returncode == 2 and "train.steps: 30 -> 40" in result.stderr


def assert_one_compilation_per_shape(stdout: str, settings: int) -> None:
  """The whole sweep over every split compiles once per batch shape, not per setting/split."""
  line = re.search(r"faithfulness program: (\d+) compilation\(s\) for (\d+) proxy setting\(s\) "
                   rf"x {len(dyck_splits.TEST_SPLITS)} split\(s\) \((\d+) batch shape", stdout)
  assert line, stdout
  compilations, n_settings, shapes = map(int, line.groups())
  assert n_settings == settings and compilations == shapes
  assert shapes <= 6  # length buckets (16, 32) x a few read-out slot counts


def test_evaluate_sweep_writes_the_table(trained, tmp_path):
  cwd, run_dir = trained
  out = tmp_path / "table.json"
  result = run(os.path.join(ROOT, "evaluate.py"), "--proxy=svd", "--rank=1,2,8",
               "--n_fit=50", "--scoring=all_closes", f"--out={out}", cwd=cwd)
  assert result.returncode == 0, result.stderr
  assert_one_compilation_per_shape(result.stdout, settings=3)
  rows = json.loads(out.read_text())
  assert len(rows) == 3 * len(dyck_splits.TEST_SPLITS)
  for row in rows:
    for key in ("split", "proxy", "rank", "accuracy_model", "accuracy_proxy", "agreement",
                "attention_jsd", "n"):
      assert key in row
  full = [r for r in rows if r["rank"] == 8]  # d_head = 8: the full-rank proxy is the model
  assert all(r["agreement"] == 1.0 and r["attention_jsd"] < 1e-6 for r in full)
  # Beside the pooled numbers, the same on closes shallower / deeper than the training depth.
  task, _, _ = tasks.from_run_config(rundir.read_config(str(run_dir)), str(run_dir))
  m = task.config.max_depth
  for row in rows:
    a = task.eval_arrays(row["split"], "all_closes")
    assert row["n_deep"] == (a["scored"] & (a["depth"] > m)).sum()
    assert row["n_shallow"] == (a["scored"] & (a["depth"] < m)).sum()
    assert row["n_shallow"] + row["n_deep"] <= row["n"]
  deep = [r for r in rows if r["split"] == "unseen_depth" and r["rank"] == 8][0]
  assert deep["n_deep"] > 0 and deep["agreement_deep"] == 1.0
  assert all(r["n_deep"] == 0 and r["agreement_deep"] is None for r in rows
             if r["split"] == "iid")  # the training distribution never goes deeper than m
  assert "agreement_deep" in result.stdout
  written = os.listdir(run_dir / "eval")
  assert "svd_layer1_head0_q+k_1-2-8.json" in written and "svd_layer1_head0_q+k_1-2-8.csv" in written


def test_evaluate_simplifies_both_layers_heads_in_one_program(trained, tmp_path):
  """--layer=0,1 (or all): one sweep whose every setting simplifies both heads, each fitted
  on its own, in one compiled program; full rank at both is still the model."""
  cwd, run_dir = trained
  out = tmp_path / "both.json"
  result = run(os.path.join(ROOT, "evaluate.py"), "--proxy=svd", "--rank=2,8", "--layer=all",
               "--head=all", "--n_fit=50", f"--out={out}", cwd=cwd)
  assert result.returncode == 0, result.stderr
  assert "on layer 0 head 0, layer 1 head 0" in result.stdout
  assert_one_compilation_per_shape(result.stdout, settings=2)
  rows = json.loads(out.read_text())
  assert {(r["layer"], r["head"]) for r in rows} == {("0+1", "0+0")}
  assert all(r["agreement"] == 1.0 for r in rows if r["rank"] == 8)
  one = run(os.path.join(ROOT, "evaluate.py"), "--proxy=svd", "--rank=2", "--layer=1",
            "--n_fit=50", f"--out={tmp_path / 'one.json'}", cwd=cwd)
  single = {r["split"]: r for r in json.loads((tmp_path / "one.json").read_text())}
  assert one.returncode == 0 and any(  # simplifying layer 0 as well changes something
      r["agreement"] != single[r["split"]]["agreement"] for r in rows if r["rank"] == 2)
  assert "svd_layer0+1_head0+0_q+k_2-8.json" in os.listdir(run_dir / "eval")


def test_training_log_reports_iid_and_deep_accuracy_as_evaluation_does(trained, tmp_path):
  cwd, run_dir = trained
  last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
  out = tmp_path / "table.json"
  result = run(os.path.join(ROOT, "evaluate.py"), "--proxy=svd", "--rank=8", "--n_fit=50",
               f"--out={out}", cwd=cwd)
  assert result.returncode == 0, result.stderr
  rows = {r["split"]: r for r in json.loads(out.read_text())}
  assert abs(last["iid_accuracy"] - rows["iid"]["accuracy_model"]) < 1e-6
  # deep_accuracy is taken on the validation deep split, never a test split.
  from pipeline import tasks
  task, cfg, params = tasks.load_trained(str(run_dir))
  deep = dict(task.eval_arrays("val_depth"))
  deep["scored"] = deep["scored"] & (deep["depth"] > task.config.max_depth)
  accuracy = tasks.model_accuracy(cfg, task.decision(), task.pad_id)
  assert abs(last["deep_accuracy"] - accuracy(params, deep)) < 1e-6


def test_a_split_from_a_text_file_evaluates_like_the_same_strings_generated(trained, tmp_path):
  cwd, run_dir = trained
  task, _, _ = tasks.from_run_config(rundir.read_config(str(run_dir)), str(run_dir))
  path = tmp_path / "deep.txt"
  path.write_text("".join(dyck.to_text(s, task.vocab) + "\n"
                          for s in task.data["unseen_depth"]))
  out = tmp_path / "table.json"
  result = run(os.path.join(ROOT, "evaluate.py"), "--proxy=svd", "--rank=2", "--n_fit=50",
               "--splits=unseen_depth,mine", f"--split_file=mine={path}", f"--out={out}",
               cwd=cwd)
  assert result.returncode == 0, result.stderr
  generated, mine = json.loads(out.read_text())
  assert (generated["split"], mine["split"]) == ("unseen_depth", "mine")
  for key in ("n", "n_deep", "agreement", "accuracy_model", "agreement_deep", "attention_jsd"):
    assert mine[key] == pytest.approx(generated[key], rel=1e-6), key
  bad = tmp_path / "bad.txt"
  bad.write_text("(a a)\n(a (b a) b)\n")
  for flag, message in ((f"--split_file=bad={bad}", f"{bad}:2: not a balanced"),
                        (f"--split_file=iid={path}", "must be new"),
                        (f"--split_file={path}", "expected NAME=PATH"),
                        (f"--split_file=x={tmp_path / 'none.txt'}", "cannot read")):
    result = run(os.path.join(ROOT, "evaluate.py"), "--proxy=svd", "--rank=2", flag, cwd=cwd)
    assert result.returncode == 2 and message in result.stderr, (flag, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,sweep,values,stem", [
    (["--proxy=kmeans", "--k=2,4", "--n_fit=50"], "k", [2, 4], "kmeans_layer1_head0_q+k_2-4"),
    (["--proxy=onehot"], None, [None], "onehot_layer1_head0_pattern"),
    (["--proxy=weight_svd", "--rank=1,8"], "rank", [1, 8], "weight_svd_layer1_head0_q_1-8"),
])
def test_every_proxy_kind_evaluates_like_svd(trained, tmp_path, args, sweep, values, stem):
  cwd, run_dir = trained
  out = tmp_path / "table.json"
  result = run(os.path.join(ROOT, "evaluate.py"), *args, "--n_bootstrap=50",
               f"--out={out}", cwd=cwd)
  assert result.returncode == 0, result.stderr
  assert_one_compilation_per_shape(result.stdout, settings=len(values))
  rows = json.loads(out.read_text())
  assert len(rows) == len(values) * len(dyck_splits.TEST_SPLITS)
  assert [r.get(sweep) for r in rows[:len(values)]] == values
  assert "rank" not in rows[0] or sweep == "rank"
  for row in rows:
    if row["n"]:
      assert row["agreement_lo"] <= row["agreement"] <= row["agreement_hi"]
  if sweep == "rank":  # full rank of the bilinear form is the model
    assert all(r["agreement"] == 1.0 for r in rows if r["rank"] == 8)
  assert json.loads((run_dir / "eval" / f"{stem}.json").read_text()) == rows
  groups = json.loads((run_dir / "eval" / f"{stem}_by_group.json").read_text())
  assert {g["group"] for g in groups} == {"depth", "distance", "depth_distance", "span_depth",
                                          "length", "position", "depth_distance_length",
                                          "margin"}
  assert sum(g["n"] for g in groups if g["group"] == "depth") == sum(r["n"] for r in rows)
  # Every scored position is a close: depth x distance buckets add up to each depth's.
  for g in groups:
    if g["group"] == "depth":
      pairs = [h for h in groups if h["group"] == "depth_distance" and h["split"] == g["split"]
               and h.get(sweep) == g.get(sweep) and h["bucket"].split(" / ")[0] == g["bucket"]]
      assert sum(h["n"] for h in pairs) == g["n"]


def test_separate_fits_take_sites_of_two_widths(trained, tmp_path):
  """What the one-line error for a joint fit of q (8) and resid_pre (16) suggests works."""
  cwd, _ = trained
  out = tmp_path / "table.json"
  result = run(os.path.join(ROOT, "evaluate.py"), "--sites=q,resid_pre", "--separate",
               "--rank=2,8", "--n_fit=50", "--n_bootstrap=50", "--splits=iid", f"--out={out}",
               cwd=cwd)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ""  # no progress bar when stderr is not a terminal
  rows = json.loads(out.read_text())
  assert [(r["rank"], r["sites"], r["separate"]) for r in rows] == \
      [(2, "q+resid_pre", True), (8, "q+resid_pre", True)]
  # The agreement's bootstrap interval is on screen, not only in the files.
  header, *lines = result.stdout.splitlines()[1:4]
  assert header.split()[header.split().index("agreement") + 1] == "agreement_95ci"
  assert f"[{rows[0]['agreement_lo']:.3f}, {rows[0]['agreement_hi']:.3f}]" in lines[0]


def test_printed_table_shows_the_agreements_interval():
  rows = [{"split": "iid", "proxy": "svd", "rank": 4, "agreement": 0.70221,
           "agreement_lo": 0.69012, "agreement_hi": 0.714, "n": 5984},
          {"split": "seen_struct", "proxy": "svd", "rank": 4, "agreement": None, "n": 0}]
  header, first, empty = evaluate.format_table(rows).splitlines()
  assert header.split() == ["split", "proxy", "rank", "agreement", "agreement_95ci", "n"]
  assert first.split() == ["iid", "svd", "4", "0.7022", "[0.690,", "0.714]", "5984"]
  assert empty.split() == ["seen_struct", "svd", "4", "-", "-", "0"]


def test_printed_table_shows_the_kinds_sweep_and_diagnostics():
  """Columns come from the registry: a kind's own sweep name and its diagnostics."""
  rows = [{"split": "iid", "proxy": "sae", "k": 8, "agreement": 0.9, "n": 10, "fvu": 0.0123,
           "l0": 8.0, "dead": 0.25}]
  header, first = evaluate.format_table(rows).splitlines()
  assert header.split() == ["split", "proxy", "k", "agreement", "agreement_95ci", "n", "fvu",
                            "l0", "dead"]
  assert first.split()[-3:] == ["0.0123", "8.0000", "0.2500"]


def test_evaluate_from_another_folder_uses_the_runs_data(trained, tmp_path):
  """config.json used to store the data directory relative to the folder trained from, so
  evaluating from any other folder regenerated the data into ./runs/tfds there."""
  cwd, run_dir = trained
  assert json.loads((run_dir / "config.json").read_text())["data_dir"] == "../tfds"
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  tables = []
  for where in (cwd, elsewhere):
    out = tmp_path / f"{where.name}.json"
    result = run(os.path.join(ROOT, "evaluate.py"), f"--run={run_dir}", "--rank=2",
                 "--n_fit=50", "--n_bootstrap=50", f"--out={out}", cwd=where)
    assert result.returncode == 0, result.stderr
    assert "generating" not in result.stdout
    tables.append(json.loads(out.read_text()))
  assert os.listdir(elsewhere) == []
  assert tables[0] == tables[1]


def test_data_dir_is_resolved_against_the_run_then_an_older_configs_folder(tmp_path,
                                                                           monkeypatch):
  run_dir = tmp_path / "runs" / "r"
  (tmp_path / "runs" / "tfds").mkdir(parents=True)
  run_dir.mkdir()
  entry = rundir.data_dir_entry(str(tmp_path / "runs" / "tfds"), str(run_dir))
  assert entry == str(tmp_path / "runs" / "tfds")  # absolute stays absolute
  monkeypatch.chdir(tmp_path)
  assert rundir.data_dir_entry("runs/tfds", "runs/r") == "../tfds"
  monkeypatch.chdir(tmp_path / "runs")  # from anywhere, the same directory
  assert rundir.resolve_data_dir("../tfds", str(run_dir)) == str(tmp_path / "runs" / "tfds")
  # An older config: relative to the folder trained from, used when it exists from here,
  monkeypatch.chdir(tmp_path)
  assert rundir.resolve_data_dir("runs/tfds", "runs/r") == "runs/tfds"
  # else from a folder holding the run (evaluated from elsewhere: it once generated the
  # data into <run>/runs/tfds).
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  monkeypatch.chdir(elsewhere)
  assert rundir.resolve_data_dir("runs/tfds", str(run_dir)) == str(tmp_path / "runs" / "tfds")
  # Nothing found anywhere: beside the run, never into the current folder.
  assert rundir.resolve_data_dir("../other", str(run_dir)) == str(tmp_path / "runs" / "other")


def test_resuming_upgrades_an_older_config_and_reads_tuples_back(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  os.makedirs("runs/tfds")
  os.makedirs("runs/r")
  config = {"task": "code", "data": {"sources": ("python=/usr/lib:*.py",)}, "train": {}}
  old = {**config, "data_dir": "runs/tfds"}  # as configs were written before
  (tmp_path / "runs" / "r" / "config.json").write_text(json.dumps(old))
  new = {**config, "data_dir": rundir.data_dir_entry("runs/tfds", "runs/r")}
  rundir.claim("runs/r", new)  # the same directory, and a tuple read back as a list
  assert rundir.read_config("runs/r")["data_dir"] == "../tfds"
  rundir.claim("runs/r", new)
  with pytest.raises(errors.RunError, match="data_dir: 'runs/tfds' -> 'runs/other'"):
    rundir.claim("runs/r", {**new, "data_dir": "../other"})


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_progress_bars_show_on_a_terminal_only(tmp_path, terminal):
  """Generating data shows a bar on a terminal; in logs and pipes (and these tests) none."""
  command = [sys.executable, "-m", "experiments.dyck_data", "--split=iid", "--n=1", *TINY_DATA,
             f"--data_dir={tmp_path}"]
  if not terminal:
    result = subprocess.run(command, env=tiny.env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "generating the Dyck splits" in result.stderr
    assert "Dyck strings" not in result.stderr and "%|" not in result.stderr
    return
  leader, follower = pty.openpty()  # a terminal 120 columns wide for stderr
  fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
  proc = subprocess.Popen(command, env=tiny.env(), stdout=subprocess.DEVNULL, stderr=follower)
  os.close(follower)
  seen = b""
  while True:
    try:
      chunk = os.read(leader, 4096)
    except OSError:  # the terminal closed with the process
      break
    if not chunk:
      break
    seen += chunk
  assert proc.wait(timeout=300) == 0
  os.close(leader)
  assert b"generating Dyck strings" in seen and b"%|" in seen, seen[-2000:]


def test_data_cli_prints_splits_that_read_back(trained, tmp_path):
  cwd, _ = trained
  result = run("-m", "experiments.dyck_data", "--split=unseen_depth", "--n=5", *TINY_DATA, cwd=cwd)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 5
  path = tmp_path / "depth.txt"
  path.write_text(result.stdout)
  strings = dyck.read_text(str(path), dyck.Vocab(4))
  assert all(dyck.max_depth(s, 4) > 4 and dyck.is_valid(s, 4) for s in strings)
  whole = run("-m", "experiments.dyck_data", "--split=train", *TINY_DATA, cwd=cwd)
  assert len(whole.stdout.splitlines()) == 400


def test_bench_sweep_uses_the_runs_own_configs(trained, tmp_path):
  """bench --part=sweep --run=DIR restores the run with its own model config (the tiny one,
  not the default), and a run without a checkpoint is one line, not a traceback."""
  cwd, run_dir = trained
  bench = os.path.join(ROOT, "bench", "dyck_bench.py")
  result = run(bench, "--part=sweep", f"--run={run_dir}", "--ranks=1,2", "--repeats=1",
               "--batch_size=8", cwd=cwd)
  assert result.returncode == 0, result.stderr
  assert "sweep: 2 ranks x 24 iid strings" in result.stdout
  empty = tmp_path / "untrained"
  shutil.copytree(run_dir, empty, ignore=shutil.ignore_patterns("checkpoints"))
  result = run(bench, "--part=sweep", f"--run={empty}", cwd=cwd)
  assert result.returncode != 0 and "has no checkpoint" in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1
