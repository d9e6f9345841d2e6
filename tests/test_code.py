"""The code corpus: reading, skipping, deduplication, splits, vocabulary, TFDS round trip."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data import code, code_tfds
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
  result = subprocess.run([sys.executable, "-m", "data.code", f"--source={source.format(root=trees)}"],
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
  """Sources long enough for 256-character windows in every split."""
  root = tmp_path_factory.mktemp("code_trees")
  for language, suffix, template in (
      ("py", "py", "def f_{i}_{j}(value):\n    total = value + {j}\n    return total\n\n"),
      ("c", "h", "#define MACRO_{i}_{j} {j}\nint func_{i}_{j}(int x);\n"),
      ("perl", "pm", "sub s_{i}_{j} {{ my $x = shift; return $x + {j}; }}\n")):
    (root / language).mkdir()
    for i in range(12):
      (root / language / f"f{i}.{suffix}").write_text(
          "".join(template.format(i=i, j=j) for j in range(12)))
  return root


def test_train_and_evaluate_the_code_task_end_to_end(code_trees, tmp_path):
  sources = [f"--source=python={code_trees / 'py'}:*.py", f"--source=c={code_trees / 'c'}:*.h",
             f"--source=perl={code_trees / 'perl'}:*.pm"]
  result = tiny.run(os.path.join(tiny.ROOT, "train.py"), "--task=code", *sources,
                    "--d_model=32", "--d_head=8", "--n_heads=2", "--d_mlp=64", "--steps=20",
                    "--log_every=10", "--eval_every=10", "--checkpoint_every=10",
                    "--batch_size=8", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "iid accuracy" in result.stdout and "(next character)" in result.stdout
  out = tmp_path / "rows.json"
  result = tiny.run(os.path.join(tiny.ROOT, "evaluate.py"), "--task=code", "--proxy=kmeans",
                    "--k=2,4",
                    "--n_fit=4", "--batch_size=8", "--n_bootstrap=20", f"--out={out}",
                    cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = json.loads(out.read_text())
  assert {r["split"] for r in rows} == {"iid", "ood_c", "ood_perl"}
  assert all(r["bits_model"] > 0 and r["n"] > 0 for r in rows)
  eval_dir = tmp_path / "runs" / "code-python-s0" / "eval"
  groups = json.loads((eval_dir / "kmeans_layer1_head0_q+k_2-4_by_group.json").read_text())
  assert {g["group"] for g in groups} == {"category", "word", "category_word"}
  repeated = [g for g in groups if g["group"] == "word" and g["bucket"] == "repeated word"]
  assert repeated and all(g["n"] > 0 for g in repeated)
  wrong = tiny.run(os.path.join(tiny.ROOT, "evaluate.py"), "--task=dyck", cwd=tmp_path)
  assert wrong.returncode == 2 and "no trained dyck run" in wrong.stderr
  for split in ("iid", "ood_c"):  # the buckets of a group partition the split's positions
    total = sum(g["n"] for g in groups if g["group"] == "category" and g["split"] == split
                and g["k"] == 2)
    assert total == next(r["n"] for r in rows if r["split"] == split and r["k"] == 2)


def test_code_gaps_figure_and_table(tmp_path):
  from experiments import code_gaps

  groups = [{"group": "category_word", "split": split, "rank": 4, "bucket": bucket,
             "agreement": agreement, "n": 10}
            for split, values in (("iid", (0.9, 0.8)), ("ood_c", (0.85, 0.5)))
            for bucket, agreement in zip(("whitespace / outside word",
                                          "identifier / repeated word"), values)]
  groups.append({"group": "word", "split": "iid", "rank": 4, "bucket": "x", "agreement": 0.1,
                 "n": 1})  # another group: ignored
  png, md = code_gaps.write(groups, 4, "svd_test", str(tmp_path))
  assert open(png, "rb").read(4) == b"\x89PNG"
  table = open(md).read()
  assert "| identifier / repeated word | 0.800 (10) | +0.300 (10) |" in table
  assert "| whitespace / outside word | 0.900 (10) | +0.050 (10) |" in table
