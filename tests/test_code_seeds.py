"""code_seeds: per-seed evaluations of every head -> the induction head's and the other
heads' numbers with intervals over seeds."""

import json

import pytest

from experiments import aggregate, code_seeds


def make_run(root, seed, induction_head, agreement):
  """A fake code run: induction.json, one svd rank-4 evaluation per head, a gaps file.
  agreement(head, split) gives each head's agreement."""
  run = root / f"code-python-s{seed}"
  (run / "eval").mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"task": "code", "train": {"seed": seed}}))
  (run / "eval" / "induction.json").write_text(json.dumps(
      [{"layer": 1, "head": h, "induction_score": 0.9 if h == induction_head else 0.1 * h / 4}
       for h in range(4)] + [{"layer": 0, "head": 0, "induction_score": 1.0}]))
  gaps = []
  for h in range(4):
    rows = [{"proxy": "svd", "rank": 4, "layer": 1, "head": h, "split": split,
             "agreement": agreement(h, split), "agreement_lo": agreement(h, split) - 0.01,
             "agreement_hi": agreement(h, split) + 0.01, "accuracy_model": 0.6 + seed / 100,
             "accuracy_model_lo": 0.5, "accuracy_model_hi": 0.7, "bits_model": 2.0}
            for split in ("iid", "ood_c")]
    (run / "eval" / f"svd_layer1_head{h}_q+k_4.json").write_text(json.dumps(rows))
    (run / "eval" / f"svd_layer1_head{h}_q+k_4_by_group.json").write_text("[]")
    gaps += [{"head": h, "layer": 1, "group": group, "bucket": bucket,
              "split": split, "n": 1000, "agreement": agreement(h, split),
              "agreement_lo": agreement(h, split) - 0.02, "agreement_hi": agreement(h, split),
              **({"gap": agreement(h, "iid") - agreement(h, split), "gap_lo": 0.01,
                  "gap_hi": 0.2} if split != "iid" else {})}
             for split in ("iid", "ood_c")
             for group, bucket in (("word", "repeated rare word"), ("all", "all"))]
    gaps.append({"head": h, "layer": 1, "group": "word", "bucket": "outside word",
                 "split": "ood_c", "n": 5000, "agreement": 0.8, "gap": 0.1, "gap_lo": -0.1,
                 "gap_hi": 0.3})
  (run / "eval" / "gaps_svd4_layer1.json").write_text(json.dumps(gaps))
  return str(run)


def test_heads_are_compared_by_role_with_intervals_over_seeds(tmp_path):
  heads = {0: 3, 1: 1, 2: 2}  # seed -> its induction head
  agreement = lambda seed: lambda h, split: (0.9 if split == "iid" else
                                             (0.5 + seed / 10 if h == heads[seed] else 0.8))
  runs = [code_seeds.load_run(make_run(tmp_path, s, heads[s], agreement(s)), 1,
                              "gaps_svd4_layer1") for s in heads]
  summary = code_seeds.summarize(runs)
  assert [h["head"] for h in summary["induction"]["heads"]] == [3, 1, 2]
  row = next(p for p in summary["proxies"] if p["split"] == "ood_c")
  expected = aggregate.seed_interval([0.5, 0.6, 0.7])
  assert (row["induction head"]["mean"], row["induction head"]["lo"],
          row["induction head"]["hi"]) == pytest.approx(expected)
  assert row["other heads"]["mean"] == pytest.approx(0.8)
  assert row["gap induction head"]["mean"] == pytest.approx(0.3)
  assert row["file_half_width"]["induction head"] == pytest.approx(0.01)
  gap = next(g for g in summary["gaps"] if g["bucket"] == "repeated rare word")
  assert gap["induction head"]["mean"] == pytest.approx(0.3)
  assert gap["file_ci_excludes_0"] == [1, 1, 1]
  versus = {v["bucket"]: v for v in summary["versus_outside"]}
  assert versus["repeated rare word"]["mean"] == pytest.approx(0.3 - 0.1)  # paired per seed
  assert versus["first rare word"]["seeds"] == 0  # no such bucket in the fake gaps
  assert summary["versus_others"][0]["mean"] == pytest.approx(0.3 - 0.1)  # 0.9 - 0.8 others
  iid = [v for v in summary["per_seed_iid"] if v["bucket"] == "repeated rare word"]
  assert [(v["seed"], v["head"], v["agreement"]) for v in iid] == [(0, 3, 0.9), (1, 1, 0.9),
                                                                   (2, 2, 0.9)]
  model = summary["model"][0]
  assert model["accuracy_model"]["mean"] == pytest.approx(0.61)
  md = code_seeds.markdown(summary, "test")
  assert "| 0 | 3 | 0.900 |" in md and "3/3 >0" in md
  assert code_seeds.figure(summary, str(tmp_path / "g.png"))


def test_a_run_that_is_not_code_or_lacks_files_is_a_usage_error(tmp_path):
  from experiments import cli

  (tmp_path / "r").mkdir()
  (tmp_path / "r" / "config.json").write_text(json.dumps({"task": "dyck"}))
  with pytest.raises(cli.UsageError, match="not a code run"):
    code_seeds.load_run(str(tmp_path / "r"), 1, "gaps_svd4_layer1")
  (tmp_path / "r" / "config.json").write_text(json.dumps({"task": "code"}))
  with pytest.raises(cli.UsageError, match="induction.json"):
    code_seeds.load_run(str(tmp_path / "r"), 1, "gaps_svd4_layer1")
