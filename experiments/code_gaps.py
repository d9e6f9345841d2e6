"""Where a code proxy's gaps are: agreement per word bucket and per character category x
word bucket, in distribution and on each other language, with intervals over files.

  python -m experiments.code_gaps --run=runs/code-python-s0 --proxy=svd --value=4

fits one proxy setting (rank or K `--value`) on every head of a layer (`--heads`, default
all heads of the last layer), one head at a time, evaluates it on every split and writes
<run>/eval/gaps_<proxy><value>_layer<l>.json (one row per head x split x group x bucket)
and .md. A row holds n, the number of files, the agreement with its 95 % interval and the
gap agreement(iid) - agreement(split) with its interval. Intervals are percentile
bootstraps that resample *files* (the windows of one file are not independent): iid's
files and the split's files are resampled independently for a gap.

The per-file counts come from the faithfulness program itself: each position's bucket is
(file, category x word cell), one group of n_files x n_cells buckets. Rows of group
`margin` (the model's top-1 margin, `pipeline.confidence`) hold agreement per margin bin,
pooled over files, for agreement at equal confidence.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import warnings
from collections.abc import Sequence

import numpy as np

import proxies
from data import code_batch
from experiments import cli
from pipeline import api, confidence, rundir, tasks
from models import atomic, checkpoints, mesh
from proxies import faithfulness

COUNTS = ("n", "agree", "correct_model", "correct_proxy")
LEVEL = 0.95


class _ByFile(tasks.TaskView):
  """The code task with one group only, (file, category_word cell): per-file sums per cell.
  Every other member is the code task's (`tasks.TaskView` forwards them)."""

  strata: dict = {}

  def __init__(self, task: tasks.CodeTask):
    super().__init__(task)
    self.n_cells = len(task.groups["category_word"])

  @functools.cached_property
  def groups(self) -> dict[str, list[str]]:
    most = max(len(np.unique(self.task.clusters(s))) for s in self.task.splits)
    return {"file_cell": [str(i) for i in range(most * self.n_cells)]}

  def files(self, split: str) -> np.ndarray:
    """The split's file ids, in the order of the file index used in the buckets."""
    return np.unique(self.task.clusters(split))

  def eval_arrays(self, split: str, scoring: str = "all") -> dict[str, np.ndarray]:
    a = self.task.eval_arrays(split, scoring)
    _, rank_N = np.unique(a["file"], return_inverse=True)
    cell = rank_N[:, None] * self.n_cells + a["category_word"]
    return {k: a[k] for k in ("inputs", "gold", "scored")} | {"file_cell": cell.astype(np.int32)}


def counts_by_file(group_rows: list[dict], split: str, n_files: int, n_cells: int
                   ) -> dict[str, np.ndarray]:
  """COUNTS as [F, C] arrays, from the file_cell rows of one split (one setting)."""
  out = {k: np.zeros((n_files, n_cells)) for k in COUNTS}
  for row in group_rows:
    if row["split"] != split or row["group"] != "file_cell" or not row["n"]:
      continue
    f, c = divmod(int(row["bucket"]), n_cells)
    n = row["n"]
    out["n"][f, c] = n
    out["agree"][f, c] = round(row["agreement"] * n)
    out["correct_model"][f, c] = round(row["accuracy_model"] * n)
    out["correct_proxy"][f, c] = round(row["accuracy_proxy"] * n)
  return out


def pool(counts: dict[str, np.ndarray], member_CxG: np.ndarray) -> dict[str, np.ndarray]:
  """[F, C] counts -> [F, G] counts of buckets made of cells (member_CxG: 0/1)."""
  return {k: v @ member_CxG for k, v in counts.items()}


def resampled_agreement(counts: dict[str, np.ndarray], n_resamples: int,
                        rng: np.random.Generator) -> np.ndarray:
  """[R, G]: agreement per bucket with the files resampled with replacement (NaN where a
  resample holds no position of the bucket)."""
  n_files = counts["n"].shape[0]
  weights_RxF = rng.multinomial(n_files, np.full(n_files, 1.0 / n_files), size=n_resamples)
  with np.errstate(invalid="ignore", divide="ignore"):
    return (weights_RxF @ counts["agree"]) / (weights_RxF @ counts["n"])


def percentile(values_RxG: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
  """(lo, hi) per bucket: the percentile interval over resamples (NaN for none)."""
  tail = 100 * (1 - level) / 2
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN bucket: no interval
    lo, hi = np.nanpercentile(values_RxG, [tail, 100 - tail], axis=0)
  return lo, hi


def gap_rows(by_split: dict[str, dict[str, np.ndarray]], labels: Sequence[str],
             n_resamples: int, seed: int, reference: str = "iid") -> list[dict]:
  """Rows per split x bucket: n, n_files, agreement [lo, hi], accuracies, and for splits
  other than `reference` the gap reference - split [lo, hi]. `by_split`: [F, G] counts."""
  rng = np.random.default_rng(seed)
  resampled = {s: resampled_agreement(c, n_resamples, rng) for s, c in by_split.items()}
  point = {}
  rows = []
  for split, c in by_split.items():
    n_G = c["n"].sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
      point[split] = c["agree"].sum(0) / n_G
      acc_model, acc_proxy = c["correct_model"].sum(0) / n_G, c["correct_proxy"].sum(0) / n_G
    lo, hi = percentile(resampled[split])
    if split != reference:
      gap_lo, gap_hi = percentile(resampled[reference] - resampled[split])
    for g, label in enumerate(labels):
      if not n_G[g]:
        continue
      row = {"split": split, "bucket": label, "n": int(n_G[g]),
             "n_files": int((c["n"][:, g] > 0).sum()), "agreement": _num(point[split][g]),
             "agreement_lo": _num(lo[g]), "agreement_hi": _num(hi[g]),
             "accuracy_model": _num(acc_model[g]), "accuracy_proxy": _num(acc_proxy[g])}
      if split != reference:
        row.update(gap=_num(point[reference][g] - point[split][g]), gap_lo=_num(gap_lo[g]),
                   gap_hi=_num(gap_hi[g]))
      rows.append(row)
  return rows


def _num(x) -> float | None:
  return None if x is None or np.isnan(x) else float(x)


def group_members(n_categories: int, n_words: int) -> dict[str, tuple[list[str], np.ndarray]]:
  """group -> (labels, member_CxG) over the category x word cells (cell = c * n_words + w)."""
  cells = n_categories * n_words
  word = np.zeros((cells, n_words))
  word[np.arange(cells), np.arange(cells) % n_words] = 1
  return {"all": (["all"], np.ones((cells, 1))),
          "word": (list(code_batch.WORD), word),
          "category_word": ([f"{c} / {w}" for c in code_batch.CATEGORIES for w in code_batch.WORD],
                            np.eye(cells))}


def spec_for(model, kind_name: str, layer: int, head: int, value: int | None, seed: int
             ) -> proxies.ProxySpec:
  """One setting of `kind_name` at (layer, head), checked against `model` (a SiteModel or
  a ModelConfig); `seed` seeds the kinds that take one."""
  kind = proxies.KINDS[kind_name]
  return proxies.make_spec(faithfulness.site_model(model), kind_name,
                           (value,) if kind.sweep else (), heads=[(layer, head)],
                           options={"seed": seed} if "seed" in kind.options else {})


def head_rows(task: tasks.CodeTask, model_cfg, params, spec: proxies.ProxySpec, n_fit: int,
              batch_size: int, n_resamples: int, seed: int) -> list[dict]:
  """Every gap row of one head's proxy (one setting)."""
  run = api.Run(_ByFile(task), model_cfg, params)
  by_file = run.task
  result = run.evaluate(run.fit_spec(spec, n_fit=n_fit), task.splits, scoring="all",
                        batch_size=batch_size, seed=seed, n_bootstrap=1)
  counts = {s: counts_by_file(result.group_rows, s, len(by_file.files(s)), by_file.n_cells)
            for s in task.splits}
  rows = []
  for group, (labels, member) in group_members(len(code_batch.CATEGORIES),
                                                len(code_batch.WORD)).items():
    pooled = {s: pool(c, member) for s, c in counts.items()}
    rows += [{"group": group, **r} for r in gap_rows(pooled, labels, n_resamples, seed)]
  # The model's confidence, pooled over files: what agreement at equal margin is read from.
  keep = ("n", "agreement", "accuracy_model", "accuracy_proxy")
  rows += [{"group": confidence.GROUP, "split": r["split"], "bucket": r["bucket"],
            **{k: r[k] for k in keep}}
           for r in result.group_rows if r["group"] == confidence.GROUP and r["n"]]
  return rows


def induction_scores(run_dir: str) -> dict[tuple[int, int], float]:
  """(layer, head) -> induction score, if experiments.induction has been run on the run."""
  path = os.path.join(run_dir, "eval", "induction.json")
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return {(r["layer"], r["head"]): r["induction_score"] for r in json.load(f)}


def _cell(row: dict, metric: str) -> str:
  v, lo, hi = row.get(metric), row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
  if v is None:
    return "–"
  sign = "+" if metric == "gap" else ""
  ci = f" [{lo:{sign}.3f}, {hi:{sign}.3f}]" if lo is not None and hi is not None else ""
  return f"{v:{sign}.3f}{ci}"


def markdown(rows: list[dict], title: str, splits: Sequence[str]) -> str:
  """One table per head: every bucket of `word` and `category_word`, iid agreement and
  each other split's gap, with their intervals over files and n."""
  ood = [s for s in splits if s != "iid"]
  lines = [f"# {title}", "", "Agreement(iid) and gap = agreement(iid) − agreement(split), "
           "95 % bootstrap intervals over files; n = positions (files).", ""]
  for head in sorted({(r["layer"], r["head"]) for r in rows}):
    mine = [r for r in rows if (r["layer"], r["head"]) == head]
    score = mine[0].get("induction_score")
    lines += [f"## layer {head[0]} head {head[1]}"
              + (f" (induction score {score:.3f})" if score is not None else ""), "",
              "| group | bucket | iid agreement | n iid | "
              + " | ".join(f"{s} gap | n {s}" for s in ood) + " |",
              "|---|---|---|---|" + "---|---|" * len(ood)]
    index = {(r["group"], r["bucket"], r["split"]): r for r in mine}
    for group, bucket in dict.fromkeys((r["group"], r["bucket"]) for r in mine):
      iid = index.get((group, bucket, "iid"), {})
      cells = [group, bucket, _cell(iid, "agreement"),
               f"{iid.get('n', 0)} ({iid.get('n_files', 0)})"]
      for s in ood:
        r = index.get((group, bucket, s), {})
        cells += [_cell(r, "gap") if iid else "–", f"{r.get('n', 0)} ({r.get('n_files', 0)})"]
      lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  parser = cli.Parser(prog="python -m experiments.code_gaps", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", required=True, help="a code run directory")
  parser.add_argument("--proxy", default="svd", help=f"one of: {', '.join(proxies.KINDS)}")
  parser.add_argument("--value", type=int, default=None,
                      help="the sweep's value: the rank or K (default: 4 for a rank, 16 for K, "
                      "else the kind's default; none for a kind without a sweep)")
  parser.add_argument("--layer", type=int, default=-1, help="block (default: the last)")
  parser.add_argument("--heads", default="all", help="comma-separated heads (default: all)")
  parser.add_argument("--n_fit", type=int, default=1000, help="training windows to fit on")
  parser.add_argument("--n_bootstrap", type=int, default=1000)
  parser.add_argument("--seed", type=int, default=0, help="seeds the bootstrap and k-means")
  parser.add_argument("--batch_size", type=int, default=256)
  args = parser.parse_args(argv)
  cli.check_choice("proxy", args.proxy, list(proxies.KINDS))
  cli.check_range("n_bootstrap", args.n_bootstrap, 1, 100_000)
  cli.check_range("seed", args.seed, 0, 2**32 - 1)
  kind = proxies.KINDS[args.proxy]
  if kind.sweep is None and args.value is not None:
    raise cli.UsageError(f"--value does not apply to {args.proxy} (it has no sweep)")
  # The values the committed code results use; a kind with another sweep takes its default.
  value = args.value
  if value is None and kind.sweep:
    value = {"rank": 4, "k": 16}.get(kind.sweep, kind.sweep_default[0])
  task, model_cfg, params = tasks.load_trained(args.run)
  if task.name != "code":
    raise cli.UsageError(f"run {args.run!r} is a {task.name} run, not a code run")
  layer = args.layer % model_cfg.n_layers if args.layer < 0 else args.layer
  cli.check_range("layer", layer, 0, model_cfg.n_layers - 1, " for this model")
  heads = list(range(model_cfg.n_heads)) if args.heads == "all" else cli.int_list(args.heads)
  for head in heads:
    cli.check_range("head", head, 0, model_cfg.n_heads - 1, " for this model")
  cli.check_range("n_fit", args.n_fit, 1, task.n_train, " (the training split's windows)")
  out_dir = os.path.join(args.run, "eval")
  cli.ensure_writable(out_dir)
  params = mesh.to_host(params)
  scores = induction_scores(args.run)
  rows = []
  for head in heads:
    try:
      spec = spec_for(model_cfg, args.proxy, layer, head, value, args.seed)
    except ValueError as e:  # a rank or K the proxy kind rejects
      raise cli.UsageError(str(e)) from None
    print(f"{args.proxy} {value} on layer {layer} head {head} ...", flush=True)
    for r in head_rows(task, model_cfg, params, spec, args.n_fit, args.batch_size,
                       args.n_bootstrap, args.seed):
      rows.append({"proxy": args.proxy, "value": value, "layer": layer, "head": head,
                   "induction_score": scores.get((layer, head)), **r})
  stem = f"gaps_{args.proxy}{value if value is not None else ''}_layer{layer}"
  path = os.path.join(out_dir, f"{stem}.json")
  rundir.write_json(path, rows)
  md = os.path.join(out_dir, f"{stem}.md")
  atomic.write_text(md, markdown(rows, f"{args.run}: gaps of {args.proxy} {value}, layer "
                                 f"{layer}", task.splits) + "\n")
  for r in rows:
    if r["group"] == "word" and r["split"] != "iid":
      print(f"head {r['head']} {r['split']} {r['bucket']}: gap {_cell(r, 'gap')}")
  print(f"wrote {path} and {md}")


if __name__ == "__main__":
  cli.run_main(main, bad_input=(checkpoints.CheckpointError,))
