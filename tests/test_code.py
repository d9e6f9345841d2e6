"""The code corpus: reading, skipping, deduplication, splits, vocabulary, TFDS round trip."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data import code, code_batch, code_tfds
from experiments import code_gaps
from proxies import faithfulness
from tests import tiny


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
  root = tmp_path_factory.mktemp("trees")
  py, c, perl = root / "py", root / "c", root / "perl"
  for d in (py, c, perl, py / "pkg", py / "site-packages"):
    d.mkdir()
  for i in range(10):
    (py / f"m{i}.py").write_text(f"def f{i}(x):\n\treturn x + {i}\n" * (i + 1))
  (py / "pkg" / "deep.py").write_text("caf\u00e9 = 'd\u00e9j\u00e0 vu'\n")  # non-ASCII: OOV
  (py / "copy.py").write_text((py / "m3.py").read_text())  # a duplicate
  (py / "blob.py").write_bytes(b"x = 1\0\0\0")  # binary
  (py / "latin.py").write_bytes(b"s = '\xe9t\xe9'\n")  # not UTF-8
  (py / "site-packages" / "vendored.py").write_text("import this\n")  # not the tree's own
  (py / "notes.txt").write_text("not python\n")
  (c / "a.h").write_text("#define A 1\nint f(void);\n")
  (c / "b.h").write_text("struct s { int x; };\n")
  (perl / "M.pm").write_text("package M;\nsub f { return 1; }\n1;\n")
  (root / "empty").mkdir()
  return root


def config(trees, **kw):
  sources = (f"python={trees / 'py'}:*.py", f"c={trees / 'c'}:*.h",
             f"perl={trees / 'perl'}:*.pm")
  return code.CodeConfig(sources=sources, **kw)


def test_files_are_read_skipped_deduplicated_and_counted(trees):
  splits, manifest = code.build(config(trees, iid_fraction=0.2))
  py = manifest["languages"]["python"]
  assert py["files"] == 11  # m0..m9 and pkg/deep.py
  assert {k: v for k, v in py["skipped"].items() if v} == {"binary": 1, "undecodable": 1,
                                                          "duplicate": 1}
  assert py["oov_chars"] == 3  # the é of café, the é and à of déjà
  assert manifest["splits"]["iid"]["files"] == 2 and manifest["splits"]["train"]["files"] == 9
  c_chars = len((trees / "c" / "a.h").read_text()) + len((trees / "c" / "b.h").read_text())
  assert manifest["splits"]["ood_c"] == {"files": 2, "chars": c_chars}
  assert manifest["splits"]["ood_perl"]["files"] == 1
  paths = [p for name in ("train", "iid") for p, _ in splits[name]]
  assert "pkg/deep.py" in paths and not any("site-packages" in p for p in paths)
  assert len(manifest["vocab"]) == code.VOCAB_SIZE


def test_split_is_by_file_and_the_seed_seeds(trees):
  iid = lambda seed: sorted(p for p, _ in code.build(config(trees, seed=seed))[0]["iid"])
  assert iid(0) == iid(0)
  assert any(iid(0) != iid(s) for s in range(1, 6))
  splits, _ = code.build(config(trees))
  assert not {p for p, _ in splits["iid"]} & {p for p, _ in splits["train"]}


def test_character_budget_caps_each_language(trees):
  _, manifest = code.build(config(trees, max_chars=100))
  assert manifest["languages"]["python"]["chars"] <= 100
  assert manifest["languages"]["python"]["skipped"]["over_budget"] > 0


def test_encode_maps_the_vocabulary_and_oov():
  text = "def f(x):\n\treturn 'é'~"
  ids = code.encode(text)
  assert ids.dtype == np.uint8 and len(ids) == len(text)
  assert code.decode(ids) == text.replace("é", "\ufffd")
  assert (ids == code.OOV).sum() == 1 and ids.max() < code.PAD


@pytest.mark.parametrize("source,needle", [
    ("python={root}/nope:*.py", "does not exist or is not a directory"),
    ("python={root}/empty:*.py", "has no *.py files"),
    ("python={root}/py:*.bin", "has no *.bin files"),
    ("python", "is not of the form language=directory:pattern"),
])
def test_an_empty_or_missing_directory_is_one_line_and_exit_2(trees, source, needle):
  result = subprocess.run([sys.executable, "-m", "experiments.code_corpus", f"--source={source.format(root=trees)}"],
                          cwd=tiny.ROOT, env=tiny.env(), capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and needle in lines[0], lines


def test_a_source_with_only_unusable_files_is_an_error(trees, tmp_path):
  (tmp_path / "x.py").write_bytes(b"\0\0")
  with pytest.raises(code.CorpusError, match="no readable text files .*binary 1"):
    code.build(code.CodeConfig(sources=(f"python={tmp_path}:*.py",)))


def test_tfds_round_trip_keeps_every_file_and_the_manifest(trees, tmp_path):
  cfg = config(trees)
  splits, manifest = code.build(cfg)
  loaded = code_tfds.load(cfg, str(tmp_path), log=lambda line: None)
  assert set(loaded) == set(splits)
  for name, files in splits.items():
    assert [code.decode(ids) for ids in loaded[name]] == [
        text.replace("\u00e9", "\ufffd").replace("\u00e0", "\ufffd") for _, text in files]
  assert code_tfds.manifest(cfg, str(tmp_path), log=lambda line: None)["splits"] == \
      manifest["splits"]
  assert os.path.isdir(tmp_path / "code_corpus" / cfg.name)


@pytest.fixture(scope="module")
def code_trees(tmp_path_factory):
  """Sources long enough for 256-character windows in every split (30 files a language:
  the iid split holds 3)."""
  root = tmp_path_factory.mktemp("code_trees")
  for language, suffix, template in (
      ("py", "py", "def f_{i}_{j}(value):\n    total = value + {j}\n    return total\n\n"),
      ("c", "h", "#define MACRO_{i}_{j} {j}\nint func_{i}_{j}(int x);\n"),
      ("perl", "pm", "sub s_{i}_{j} {{ my $x = shift; return $x + {j}; }}\n")):
    (root / language).mkdir()
    for i in range(30):
      (root / language / f"f{i}.{suffix}").write_text(
          "".join(template.format(i=i, j=j) for j in range(12)))
  return root


@pytest.mark.slow  # trains a model and runs the commands
def test_train_evaluate_and_gaps_of_the_code_task_end_to_end(code_trees, tmp_path):
  sources = [f"--source=python={code_trees / 'py'}:*.py", f"--source=c={code_trees / 'c'}:*.h",
             f"--source=perl={code_trees / 'perl'}:*.pm"]
  result = tiny.run(os.path.join(tiny.ROOT, "train.py"), "--task=code", *sources,
                    "--d_model=32", "--d_head=8", "--n_heads=2", "--d_mlp=64", "--steps=20",
                    "--log_every=10", "--eval_every=10", "--checkpoint_every=10",
                    "--batch_size=8", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "iid accuracy" in result.stdout and "(next character)" in result.stdout
  out = tmp_path / "rows.json"
  result = tiny.run(os.path.join(tiny.ROOT, "evaluate.py"), "--task=code", "--proxy=svd",
                    "--rank=2,4", "--n_fit=4", "--batch_size=8", "--n_bootstrap=20",
                    f"--out={out}", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = json.loads(out.read_text())
  assert {r["split"] for r in rows} == {"iid", "ood_c", "ood_perl"}
  assert all(r["bits_model"] > 0 and r["n"] > 0 for r in rows)
  run = tmp_path / "runs" / "code-python-s0"
  groups = json.loads((run / "eval" / "svd_layer1_head0_q+k_2-4_by_group.json").read_text())
  assert {g["group"] for g in groups} == {"category", "word", "category_word", "margin"}
  repeated = [g for g in groups if g["group"] == "word" and g["bucket"] == "repeated rare word"]
  assert repeated and all(g["n"] > 0 for g in repeated)
  wrong = tiny.run(os.path.join(tiny.ROOT, "evaluate.py"), "--task=dyck", cwd=tmp_path)
  assert wrong.returncode == 2 and "no trained dyck run" in wrong.stderr
  for split in ("iid", "ood_c"):  # the buckets of a group partition the split's positions
    total = sum(g["n"] for g in groups if g["group"] == "category" and g["split"] == split
                and g["rank"] == 2)
    assert total == next(r["n"] for r in rows if r["split"] == split and r["rank"] == 2)

  result = tiny.run("-m", "experiments.code_gaps", f"--run={run}", "--value=2", "--n_fit=4",
                    "--batch_size=8", "--n_bootstrap=50", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  gaps = json.loads((run / "eval" / "gaps_svd2_layer1.json").read_text())
  assert {g["head"] for g in gaps} == {0, 1}
  head0 = [g for g in gaps if g["head"] == 0]
  for r in rows:  # the same proxy and windows: the pooled bucket is evaluate.py's row
    if r["rank"] == 2:
      pooled = next(g for g in head0 if g["group"] == "all" and g["split"] == r["split"])
      assert pooled["n"] == r["n"]
      assert pooled["agreement"] == pytest.approx(r["agreement"], abs=1e-9)
  by = {(g["group"], g["bucket"], g["split"]): g for g in head0}
  for split in ("ood_c", "ood_perl"):
    g = by[("all", "all", split)]
    assert g["gap"] == pytest.approx(by[("all", "all", "iid")]["agreement"] - g["agreement"])
    assert g["gap_lo"] <= g["gap"] <= g["gap_hi"]
    assert sum(w["n"] for (group, _, s), w in by.items()
               if group == "word" and s == split) == g["n"]
  assert "## layer 1 head 0" in (run / "eval" / "gaps_svd2_layer1.md").read_text()


def test_windows_are_inside_one_file_spread_over_files_and_seeded():
  rng = np.random.default_rng(0)
  files = [rng.integers(0, 90, size).astype(np.uint8) for size in (40, 300, 2000, 5000, 700)]
  a = code_batch.sample_windows(files, 64, 30, seed=3)
  assert a["inputs"].shape == (30, 64)
  counts = np.bincount(a["file"], minlength=len(files))
  assert counts[0] == 0  # 40 characters hold no window of 65
  assert counts[1] == 4  # 300 characters hold only (300 - 1) // 64 windows
  assert sorted(counts[2:]) == [8, 9, 9]  # the rest spread evenly over the files with room
  for inputs, gold, f in zip(a["inputs"], a["gold"], a["file"]):
    text = files[f].tobytes()
    window = np.concatenate([inputs, gold[-1:]]).astype(np.uint8).tobytes()
    assert window in text  # one file, contiguous
    np.testing.assert_array_equal(gold[:-1], inputs[1:])
  for f in range(len(files)):  # non-overlapping within a file
    starts = sorted(files[f].tobytes().find(row.astype(np.uint8).tobytes())
                    for row in a["inputs"][a["file"] == f])
    assert all(b - s >= 64 for s, b in zip(starts, starts[1:]))
  b = code_batch.sample_windows(files, 64, 30, seed=3)
  np.testing.assert_array_equal(a["inputs"], b["inputs"])
  assert not np.array_equal(a["inputs"], code_batch.sample_windows(files, 64, 30, 4)["inputs"])
  assert len(code_batch.sample_windows(files, 64, 10_000, seed=0)["inputs"]) == 4 + 31 + 78 + 10


def test_word_buckets_tell_frequent_from_rare_and_first_from_repeated():
  train = [code.encode("def run(self):\n  return self\n" * 5 + "x = foo\n")]
  frequent = code_batch.frequent_words(train, coverage=0.5)
  assert frequent == {"self", "def"}  # self 10, def 5 = 15 of 27 words; return ties at 5
  text = "self.zap = self.zap + zapper\n"
  buckets = code_batch.word_buckets(code.encode(text), frequent)
  label = lambda start, end: {code_batch.WORD[b] for b in buckets[start:end]}
  assert buckets[0] == 0 and label(1, 4) == {"first frequent word"}  # s|elf
  assert label(6, 8) == {"first rare word"}  # z|ap
  assert label(12, 15) == {"repeated frequent word"}  # the second self
  assert label(17, 19) == {"repeated rare word"}  # the second zap
  assert label(23, 28) == {"first rare word"}  # zapper is another word
  assert label(4, 5) == {"outside word"}
  with pytest.raises(ValueError, match="coverage"):
    code_batch.frequent_words(train, coverage=0)


def test_bootstrap_over_clusters_resamples_whole_files():
  rng = np.random.default_rng(0)
  n = 40
  sums = {"n_scored": rng.integers(50, 100, n).astype(float)}
  sums["correct_model"] = np.floor(sums["n_scored"] * rng.uniform(0.2, 0.9, n))
  sums["nll_model"] = sums["n_scored"]
  sums["n_query"] = sums["n_scored"]
  for k in faithfulness.PROXY_SUMS:
    sums[k] = np.floor(sums["n_scored"] * rng.uniform(0.2, 0.9, n))[None]
  single = faithfulness.SplitResult(sums, {})
  doubled = faithfulness.SplitResult({k: np.concatenate([v, v], -1) for k, v in sums.items()}, {})
  by_file = doubled.bootstrap(200, seed=1, clusters=np.tile(np.arange(n), 2) * 7)
  assert by_file == single.bootstrap(200, seed=1)  # each file: two copies of one string
  by_string = doubled.bootstrap(200, seed=1)[0]
  width = lambda r: r["agreement_hi"] - r["agreement_lo"]
  assert width(by_string) < width(by_file[0])  # copies counted as independent: too narrow


def test_gap_intervals_resample_files():
  labels = ["a", "b"]
  one = lambda agree: {"n": np.array([[10.0, 5.0], [10.0, 5.0]]),
                       "agree": np.array(agree, float),
                       "correct_model": np.zeros((2, 2)), "correct_proxy": np.zeros((2, 2))}
  rows = code_gaps.gap_rows({"iid": one([[9, 5], [9, 5]]), "ood": one([[2, 5], [8, 5]])},
                            labels, n_resamples=500, seed=0)
  by = {(r["split"], r["bucket"]): r for r in rows}
  assert by[("iid", "a")]["agreement"] == pytest.approx(0.9)
  assert by[("iid", "a")]["agreement_lo"] == by[("iid", "a")]["agreement_hi"]  # files agree
  a = by[("ood", "a")]
  assert a["gap"] == pytest.approx(0.4) and a["n_files"] == 2
  assert a["gap_lo"] == pytest.approx(0.1) and a["gap_hi"] == pytest.approx(0.7)  # 1 or 2 files
  assert by[("ood", "b")]["gap"] == 0 == by[("ood", "b")]["gap_lo"]
  members = code_gaps.group_members(len(code_batch.CATEGORIES), len(code_batch.WORD))
  assert members["word"][1].sum(0).tolist() == [len(code_batch.CATEGORIES)] * len(code_batch.WORD)
