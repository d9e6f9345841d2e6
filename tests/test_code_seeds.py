"""code_seeds: per-seed evaluations of every head -> the induction head's and the other
heads' numbers, paired contrasts within seeds, intervals over seeds recomputable from the
per-seed values the JSON keeps."""

import json

import numpy as np
import pytest

from experiments import aggregate, cli, code_seed_tables, code_seeds

SPLITS = ("iid", "ood_c")


def bucket_row(head, group, bucket, split, agreement, n=1000, iid=None, **extra):
  row = {"head": head, "layer": 1, "group": group, "bucket": bucket, "split": split, "n": n,
         "n_files": 10, "agreement": agreement, "agreement_lo": agreement - 0.02,
         "agreement_hi": agreement + 0.02, "accuracy_model": 0.6, "accuracy_proxy": 0.5,
         **extra}
  if split != "iid" and iid is not None:
    row.update(gap=iid - agreement, gap_lo=0.01, gap_hi=0.2)
  return row


def make_run(root, seed, induction_head, agreement, rare_gap=None, steps=(500, 1000)):
  """A fake code run: metrics.jsonl, induction.json and induction_steps.json, one svd
  rank-4 evaluation per head, a gaps file. agreement(head, split): each head's agreement;
  rare_gap(head): the gap at repeated rare words (first rare: 0.05; default: the head's
  overall gap)."""
  run = root / f"code-python-s{seed}"
  (run / "eval").mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"task": "code", "train": {"seed": seed}}))
  (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 - s / 1000})
                                             + "\n" for s in (100, 200)) + '{"step": 3')
  score = lambda h: 0.9 if h == induction_head else 0.1 * h / 4
  (run / "eval" / "induction.json").write_text(json.dumps(
      [{"layer": 1, "head": h, "induction_score": score(h)} for h in range(4)]
      + [{"layer": 0, "head": 0, "induction_score": 1.0}]))
  (run / "eval" / "induction_steps.json").write_text(json.dumps(
      [{"step": s, "layer": 1, "head": h, "induction_score": score(h) * s / steps[-1]}
       for s in steps for h in range(4)]))
  gaps = []
  for h in range(4):
    rows = [{"proxy": "svd", "rank": 4, "layer": 1, "head": h, "split": split,
             "agreement": agreement(h, split), "agreement_lo": agreement(h, split) - 0.01,
             "agreement_hi": agreement(h, split) + 0.01, "accuracy_model": 0.6 + seed / 100,
             "accuracy_model_lo": 0.5, "accuracy_model_hi": 0.7, "bits_model": 2.0}
            for split in SPLITS]
    (run / "eval" / f"svd_layer1_head{h}_q+k_4.json").write_text(json.dumps(rows))
    (run / "eval" / f"svd_layer1_head{h}_q+k_4_by_group.json").write_text("[]")
    # An sae of k = 4 on every head: gap 0.05, FVU 0.2 / 0.3; per word bucket (group rows),
    # on the induction head a gap of 0.1 at repeated rare words and accuracy 0.1 below the
    # model's out of distribution; on the other heads numbers by_word must not read.
    (run / "eval" / f"sae_layer1_head{h}_q+k_4.json").write_text(json.dumps(
        [{**row, "proxy": "sae", "k": 4, "agreement": a, "fvu": f}
         for row, a, f in zip(rows, (0.95, 0.9), (0.2, 0.3))]))
    ours = h == induction_head
    (run / "eval" / f"sae_layer1_head{h}_q+k_4_by_group.json").write_text(json.dumps(
        [{"proxy": "sae", "k": 4, "layer": 1, "head": h, "group": "word",
          "bucket": "repeated rare word", "split": split, "n": 100,
          "agreement": (0.9 if split == "iid" else 0.8) if ours else 0.0,
          "accuracy_model": 0.6, "accuracy_proxy": (0.6 if split == "iid" else 0.5) if ours
          else 1.0} for split in SPLITS]))
    iid, ood = agreement(h, "iid"), agreement(h, "ood_c")
    rare = iid - (rare_gap(h) if rare_gap else iid - ood)
    gaps += [bucket_row(h, "all", "all", s, a, iid=iid) for s, a in (("iid", iid), ("ood_c", ood))]
    gaps += [bucket_row(h, "word", "repeated rare word", s, a, iid=iid)
             for s, a in (("iid", iid), ("ood_c", rare))]
    gaps += [bucket_row(h, "word", "first rare word", s, a, iid=iid)
             for s, a in (("iid", iid), ("ood_c", iid - 0.05))]
    # Outside words: identifier letters gap 0.1 (n 100), whitespace gap 0.3 (n 900); the
    # repeated rare word is all identifier letters: its baseline is 0.1, not the pooled 0.28.
    for cat, gap, n in (("identifier", 0.1, 100), ("whitespace", 0.3, 900)):
      gaps += [bucket_row(h, "category_word", f"{cat} / outside word", s, a, n=n, iid=0.9)
               for s, a in (("iid", 0.9), ("ood_c", 0.9 - gap))]
    gaps += [bucket_row(h, "category_word", "identifier / repeated rare word", s, 0.8, iid=0.8)
             for s in SPLITS]
    # Margin bins: iid all confident (agreement 0.95), ood_c half unsure (agreement 0.5
    # there, 0.95 where confident): pooled gap 0.225, at equal margin 0 where iid has none.
    gaps += [bucket_row(h, "margin", "0.9-1", "iid", 0.95, n=1000),
             bucket_row(h, "margin", "0.9-1", "ood_c", 0.95, n=500),
             bucket_row(h, "margin", "0-0.1", "ood_c", 0.5, n=500)]
  (run / "eval" / "gaps_svd4_layer1.json").write_text(json.dumps(gaps))
  return str(run)


HEADS = {0: 3, 1: 1, 2: 2}  # seed -> its induction head


def runs(tmp_path, rare_gap=None):
  agreement = lambda seed: lambda h, split: (0.9 if split == "iid" else
                                             (0.5 + seed / 10 if h == HEADS[seed] else 0.8))
  return [code_seed_tables.load_run(make_run(tmp_path, s, HEADS[s], agreement(s),
                                       rare_gap and rare_gap(s)), 1, "gaps_svd4_layer1")
          for s in HEADS]


def test_heads_are_compared_by_role_with_intervals_over_seeds(tmp_path):
  summary = code_seed_tables.summarize(runs(tmp_path))
  assert [h["head"] for h in summary["induction"]["heads"]] == [3, 1, 2]
  row = next(p for p in summary["proxies"] if p["split"] == "ood_c" and p["proxy"] == "svd")
  expected = aggregate.seed_interval([0.5, 0.6, 0.7])
  assert (row["induction head"]["mean"], row["induction head"]["lo"],
          row["induction head"]["hi"]) == pytest.approx(expected)
  assert row["induction head"]["values"] == pytest.approx([0.5, 0.6, 0.7])
  assert row["other heads"]["mean"] == pytest.approx(0.8)
  assert row["gap induction head"]["mean"] == pytest.approx(0.3)
  assert row["file_half_width"]["induction head"] == pytest.approx(0.01)
  gap = next(g for g in summary["gaps"] if g["bucket"] == "repeated rare word")
  assert gap["induction head"]["mean"] == pytest.approx(0.3)
  assert gap["file_ci_excludes_0"] == [1, 1, 1]
  assert summary["model"][0]["accuracy_model"]["mean"] == pytest.approx(0.61)


def test_contrasts_are_paired_within_seeds(tmp_path):
  # Per seed the repeated-rare gap is 0.05 + 0.1 * seed on the induction head, 0.05 on the
  # others; first rare is 0.05 everywhere: the copy contrast is 0.1 * seed, others 0.
  rare_gap = lambda seed: lambda h: 0.05 + (0.1 * seed if h == HEADS[seed] else 0.0)
  summary = code_seed_tables.summarize(runs(tmp_path, rare_gap))
  c = {x["contrast"]: x for x in summary["contrasts"]}
  copy = c["repeated rare − first rare"]
  assert copy["induction head"]["values"] == pytest.approx([0.0, 0.1, 0.2])
  assert copy["other heads"]["values"] == pytest.approx([0.0, 0.0, 0.0])
  assert copy["induction − others"]["values"] == pytest.approx([0.0, 0.1, 0.2])
  # The baseline outside words is the identifier letters' gap (0.1), weighted by the
  # bucket's categories, not the pooled outside-word gap.
  versus = c["repeated rare word − same categories outside words"]
  assert versus["induction head"]["values"] == pytest.approx([0.05 - 0.1, 0.15 - 0.1, 0.25 - 0.1])
  assert c["gap, all positions"]["induction − others"]["values"] == pytest.approx(
      [0.4 - 0.1, 0.3 - 0.1, 0.2 - 0.1])


def test_direction_margin_and_training_curves(tmp_path):
  summary = code_seed_tables.summarize(runs(tmp_path))
  d = next(x for x in summary["direction"] if x["split"] == "ood_c" and x["bucket"] == "all")
  assert d["induction head"]["mean"] == pytest.approx(-0.1)  # proxy 0.5 vs model 0.6
  m = {x["gap"]: x for x in summary["margin"]}
  assert m["raw"]["induction head"]["mean"] == pytest.approx(0.95 - 0.725)
  assert m["matched"]["induction head"]["mean"] == pytest.approx(0.0)
  heads = summary["induction"]["heads"]
  assert [h["formed_at"] for h in heads] == [1000, 1000, 1000]  # 0.45 at 500, 0.9 at 1000
  assert heads[0]["final_loss"] == pytest.approx(1.8)  # the cut-short last line is skipped
  equal = {e["split"]: e for e in summary["sae_versus_svd"]}
  assert set(equal) == {"iid", "ood_c"} and equal["iid"]["sae fvu"]["mean"] == pytest.approx(0.2)
  # sae gap 0.05 against the induction head's svd gap 0.4, 0.3, 0.2 (seeds 0, 1, 2)
  assert equal["ood_c"]["sae − svd gap"]["values"] == pytest.approx([-0.35, -0.25, -0.15])


def test_by_word_reads_the_induction_heads_group_rows_and_pairs_within_seeds(tmp_path):
  summary = code_seed_tables.summarize(runs(tmp_path))
  (row,) = [e for e in summary["by_word"]
            if (e["proxy"], e["value"], e["bucket"]) == ("sae", 4, "repeated rare word")]
  assert row["gap ood_c"]["values"] == pytest.approx([0.1, 0.1, 0.1])
  assert row["direction iid"]["values"] == pytest.approx([0.0, 0.0, 0.0])
  assert row["direction ood_c"]["values"] == pytest.approx([-0.1, -0.1, -0.1])
  d = next(x for x in summary["direction"] if x["split"] == "ood_c" and x["bucket"] == "all")
  assert d["change from iid"]["induction head"]["values"] == pytest.approx([0.0, 0.0, 0.0])
  m = next(x for x in summary["margin"] if x["gap"] == "raw")
  assert m["induction − others"]["values"] == pytest.approx([0.0, 0.0, 0.0])  # same bins
  md = code_seeds.markdown(summary, "t", "python -m experiments.code_seeds")
  assert "| sae k 4 | repeated rare word | +0.100" in md


def test_never_formed_is_reported_not_dropped(tmp_path):
  (record,) = [code_seed_tables.load_run(make_run(tmp_path, 0, 3, lambda h, s: 0.9, steps=(100,)),
                                   1, "gaps_svd4_layer1")]
  record["induction_steps"] = [{"step": 100, "head": 3, "score": 0.3}]
  record["formed_at"] = None
  summary = code_seed_tables.summarize([record])
  assert summary["induction"]["heads"][0]["formed_at"] is None
  md = code_seeds.markdown(summary, "t", "cmd")
  assert "| never |" in md


def test_command_writes_tables_that_recompute_from_the_per_seed_values(tmp_path):
  paths = [make_run(tmp_path, s, HEADS[s], lambda h, split: 0.9 - 0.1 * (split != "iid") * h)
           for s in HEADS]
  out = tmp_path / "docs" / "seeds"
  code_seeds.main([f"--runs={','.join(paths)}", f"--out={out}"])
  written = json.loads((tmp_path / "docs" / "seeds.json").read_text())
  recomputed = json.loads(json.dumps(code_seed_tables.summarize(written["per_seed"])))
  assert recomputed == written
  md = (tmp_path / "docs" / "seeds.md").read_text()
  assert "python -m experiments.code_seeds --runs=" in md.splitlines()[2]
  assert "| 0 | 3 | 0.900 |" in md and "3/3 >0" in md
  for png in ("seeds_gaps.png", "seeds_training.png"):
    assert (tmp_path / "docs" / png).stat().st_size > 1000


def test_matched_difference_pools_and_matches():
  raw, matched = aggregate.matched_difference({"a": (10, 0.9), "b": (10, 0.5)},
                                              {"a": (30, 0.8), "b": (10, 0.4), "c": (5, 0.0)})
  assert raw == pytest.approx(0.7 - (24 + 4) / 45)
  assert matched == pytest.approx(0.1)  # 0.1 in both shared bins; c has no reference
  assert aggregate.matched_difference({"a": (1, 1.0)}, {"b": (1, 0.0)})[1] is None
  assert np.isclose(aggregate.matched_difference({"a": (1, 1.0)}, {"b": (1, 0.0)})[0], 1.0)


def test_a_run_that_is_not_code_or_lacks_files_is_a_usage_error(tmp_path):
  (tmp_path / "r").mkdir()
  (tmp_path / "r" / "config.json").write_text(json.dumps({"task": "dyck"}))
  with pytest.raises(cli.UsageError, match="not a code run"):
    code_seed_tables.load_run(str(tmp_path / "r"), 1, "gaps_svd4_layer1")
  (tmp_path / "r" / "config.json").write_text(json.dumps({"task": "code"}))
  with pytest.raises(cli.UsageError, match="induction.json"):
    code_seed_tables.load_run(str(tmp_path / "r"), 1, "gaps_svd4_layer1")
