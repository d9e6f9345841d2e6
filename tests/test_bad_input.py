"""Bad input to train.py and evaluate.py: one line naming the problem (and the valid
choices), exit status 2, no traceback, and nothing already written lost."""

import json
import os

import pytest

from tests.conftest import TINY_TRAIN as TINY_MODEL
from tests.tiny import DATA_FLAGS as TINY_DATA, ROOT, run


@pytest.mark.parametrize("script,args,needle", [
    ("evaluate.py", ["--proxy=nope"],
     "unknown proxy 'nope'; choose one of: svd, kmeans, onehot, weight_svd, sae, random_subspace"),
    ("evaluate.py", ["--proxy=kmeans", "--k=0"], "k=0 is out of range"),
    ("evaluate.py", ["--proxy=kmeans", "--k=5000"], "k=5000 is out of range; choose 1..1024"),
    ("evaluate.py", ["--proxy=kmeans", "--k=300", "--n_fit=2"], "vectors to fit on); choose"),
    ("evaluate.py", ["--proxy=kmeans", "--centered"], "--centered does not apply to kmeans"),
    ("evaluate.py", ["--proxy=onehot", "--sites=q"],
     "onehot does not apply to site 'q'; it applies to: pattern"),
    ("evaluate.py", ["--proxy=weight_svd", "--rank=9"], "rank=9 is out of range"),
    ("evaluate.py", ["--rank=0"], "rank=0 is out of range"),
    ("evaluate.py", ["--rank=1000"], "choose 1..8"),
    ("evaluate.py", ["--rank=two"], "expected integers"),
    ("evaluate.py", ["--layer=5"], "layer=5 is out of range for this model; choose 0..1"),
    ("evaluate.py", ["--layer=0,x"], "--layer: expected integers separated by commas"),
    ("evaluate.py", ["--head=1"], "head=1 is out of range for this model; choose 0..0"),
    ("evaluate.py", ["--run=/nonexistent"], "is not a run directory"),
    ("evaluate.py", ["--splits=iid,nope"], "unknown split 'nope'"),
    # Flags of another kind (which ones apply is read off proxies.KINDS).
    ("evaluate.py", ["--proxy=kmeans", "--rank=4"],
     "--rank does not apply to kmeans; it applies to: svd, weight_svd"),
    ("evaluate.py", ["--proxy=onehot", "--rank=4"], "--rank does not apply to onehot"),
    ("evaluate.py", ["--proxy=svd", "--k=8"], "--k does not apply to svd; it applies to: kmeans, sae"),
    ("evaluate.py", ["--proxy=onehot", "--k=4"], "--k does not apply to onehot"),
    ("evaluate.py", ["--proxy=weight_svd", "--k=4"], "--k does not apply to weight_svd"),
    ("evaluate.py", ["--proxy=weight_svd", "--separate"], "--separate does not apply to weight_svd"),
    ("evaluate.py", ["--proxy=onehot", "--n_fit=10"],
     "--n_fit does not apply to onehot; it applies to: svd, kmeans, sae"),
    ("evaluate.py", ["--proxy=weight_svd", "--n_fit=10"], "--n_fit does not apply to weight_svd"),
    # Sites of two widths (d_model 16, d_head 8): no joint fit, ranks within the narrowest.
    ("evaluate.py", ["--sites=q,resid_pre"],
     "a joint svd fit needs sites of one width, but q has 8, resid_pre has 16 dimensions"),
    ("evaluate.py", ["--proxy=kmeans", "--sites=resid_pre,k"], "a joint kmeans fit needs"),
    ("evaluate.py", ["--sites=q,resid_pre", "--separate", "--rank=4,9"],
     "rank=9 is out of range (q, the narrowest site simplified, has 8 dimensions); choose 1..8"),
    ("train.py", ["--depth=0"], "depth must be in 1..14"),
    ("train.py", ["--task=nope"], "unknown task 'nope'; choose one of: dyck"),
    ("train.py", ["--steps=-3"], "steps must be in 1..1000000000, got -3"),
    ("train.py", ["--bogus=1"], "unrecognized arguments"),
    ("train.py", ["--short_length=4", "--workdir=runs/never"], "found only 0 of 24"),
    ("train.py", ["--workdir=/proc/forbidden"], "cannot write to"),
])
def test_bad_input_is_one_line_and_exit_2(trained, script, args, needle):
  cwd, _ = trained
  extra = TINY_DATA if script == "train.py" else []
  result = run(os.path.join(ROOT, script), *extra, *args, cwd=cwd)
  assert result.returncode == 2, (result.stdout, result.stderr)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
  assert needle in lines[0], lines[0]
  assert not os.path.exists(os.path.join(cwd, "runs", "never", "config.json"))


def test_bad_input_loses_nothing(trained):
  cwd, run_dir = trained
  before = {p: os.path.getmtime(os.path.join(run_dir, p)) for p in ("config.json", "metrics.jsonl")}
  result = run(os.path.join(ROOT, "train.py"), *TINY_DATA, *TINY_MODEL, "--d_model=32", cwd=cwd)
  assert result.returncode == 2 and "holds a run with another config" in result.stderr
  after = {p: os.path.getmtime(os.path.join(run_dir, p)) for p in before}
  assert before == after
  assert sorted(os.listdir(run_dir / "checkpoints")) == ["10", "20", "30"]


def test_evaluate_rejects_malformed_runs(trained, tmp_path):
  cwd, _ = trained
  (tmp_path / "config.json").write_text('{"task": "dyck", "data": {"bogus": 1}}')
  result = run(os.path.join(ROOT, "evaluate.py"), f"--run={tmp_path}", cwd=cwd)
  assert result.returncode == 2 and "is not a valid run config" in result.stderr
  (tmp_path / "config.json").write_text("{not json")
  result = run(os.path.join(ROOT, "evaluate.py"), f"--run={tmp_path}", cwd=cwd)
  assert result.returncode == 2 and "cannot read" in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


HOSTILE = [
    ["--depth=-3"], ["--depth=99999999999999999999999"], ["--types=0"], ["--types=10000000"],
    ["--steps=1e9"], ["--steps=-1"], ["--batch_size=0"], ["--batch_size=123456789012"],
    ["--learning_rate=nan"], ["--learning_rate=inf"], ["--learning_rate=-1"],
    ["--d_model=0"], ["--d_model=100000000"], ["--seed=-1"], ["--data_seed=-5"],
    ["--n_train=0"], ["--n_test=1000000000"], ["--ood_depth_cap=1000000000"],
    ["--short_length=-7"], ["--dtype=float64"], ["--task=dÿck"], ["--task=" + "x" * 5000],
    ["--workdir=/proc/1/nope"], ["--data_dir=/dev/null/tfds"], ["--max_length=∞"],
    ["--log_every=0"], ["--warmup_steps=-1"], ["positional"], ["--depth"],
]


@pytest.mark.parametrize("args", HOSTILE, ids=lambda a: a[0][:30])
def test_hostile_train_arguments(args, tmp_path):
  result = run(os.path.join(ROOT, "train.py"), *TINY_DATA, *args, cwd=tmp_path)
  assert result.returncode == 2, (result.stdout[-500:], result.stderr[-500:])
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert not os.path.exists(tmp_path / "runs" / "dyck-k4-m4-s0" / "config.json")


@pytest.mark.parametrize("args", [
    ["--rank=-1"], ["--rank=1,,x"], ["--rank=99999999999999999999"], ["--head=7"],
    ["--layer=-99"], ["--n_fit=0"], ["--n_fit=10000000"], ["--batch_size=-4"],
    ["--scoring=best"], ["--sites=q,zz"], ["--proxy=ｓｖｄ"], ["--out=/proc/1/nope/x.json"],
    ["--splits="], ["--proxy=kmeans", "--k=-2"], ["--proxy=kmeans", "--seed=-1"],
    ["--n_bootstrap=0"], ["--proxy=onehot", "--separate"],
], ids=lambda a: "_".join(a)[:40])
def test_hostile_evaluate_arguments(trained, args):
  cwd, run_dir = trained
  before = sorted(os.listdir(run_dir / "eval")) if (run_dir / "eval").exists() else []
  result = run(os.path.join(ROOT, "evaluate.py"), *args, cwd=cwd)
  assert result.returncode == 2, (result.stdout[-500:], result.stderr[-500:])
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  after = sorted(os.listdir(run_dir / "eval")) if (run_dir / "eval").exists() else []
  assert before == after


def test_checkpoint_of_another_model_is_a_clear_error(trained, tmp_path):
  cwd, run_dir = trained
  config = json.loads((run_dir / "config.json").read_text())
  config["model"]["d_mlp"] = 48  # same run, but the config now describes another model
  other = tmp_path / "other"
  other.mkdir()
  (other / "config.json").write_text(json.dumps(config))
  os.symlink(run_dir / "checkpoints", other / "checkpoints")
  result = run(os.path.join(ROOT, "evaluate.py"), f"--run={other}", cwd=cwd)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "do not fit this model config" in lines[0]
  assert "['mlp_in']['bias'] is float32[32] in the checkpoint, float32[48] in the model" \
      in lines[0], lines[0]
