"""The registry is the only list of proxy kinds: a kind registered here, in one place, goes
through evaluate.py (flags, validation, labels, files), the API, and the reproduction's
plans, figures and report without any other list to edit; its sweep may have any name
(here `coords`, neither rank nor k), and its own declared limits hold everywhere."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

import evaluate
import proxies
from experiments import aggregate, cli, figures, reproduce, report
from models import transformer
from pipeline import api, tasks
from proxies import base


def _fit(fit_inputs, counts, options):
  """Keeps c coordinates of each vector from `start` on (a deliberately crude proxy)."""
  width, start = next(iter(fit_inputs.values())).shape[1], options["start"]
  keep = [(np.arange(width) >= start) & (np.arange(width) < start + c) for c in counts]
  return {"keep": np.stack(keep).astype(np.float32)}


def _apply(arrays, site, x):
  return x * jnp.asarray(arrays["keep"], x.dtype)


@pytest.fixture
def dummy(monkeypatch):
  """A fifth kind, registered for one test and gone after it."""
  monkeypatch.setattr(base, "KINDS", dict(base.KINDS))
  monkeypatch.setattr(proxies, "KINDS", base.KINDS)
  kind = base.register(base.ProxyKind(name="firstcoords", sweep="coords", sites=("q", "k"),
                                      allowed_sites=("q", "k"), fit=_fit, apply=_apply,
                                      options={"start": 0}, sweep_default=(2,),
                                      bounds=(base.within_width,),
                                      sweep_label="coordinates kept",
                                      help={"coords": "coordinates to keep",
                                            "start": "the first coordinate kept"}))
  assert proxies.KINDS["firstcoords"] is kind
  return kind


def test_a_registered_kind_goes_through_evaluate_py_and_the_report(dummy, trained, capsys,
                                                                   tmp_path):
  _, run_dir = trained
  evaluate.main([f"--run={run_dir}", "--proxy=firstcoords", "--coords=2,8",
                 "--splits=iid,unseen_depth"])
  out = capsys.readouterr().out
  table = [line.split() for line in out.splitlines() if line.startswith(("iid ", "unseen_depth "))]
  assert [row[1] for row in table] == ["firstcoords"] * 4
  rows = json.loads((run_dir / "eval" / "firstcoords_layer1_head0_q+k_2-8.json").read_text())
  assert [r["coords"] for r in rows] == [2, 8, 2, 8]
  assert rows[1]["agreement"] == 1.0  # every coordinate of d_head 8 kept: the model
  # Its declared limit (within the head's width) holds on the command line and in the API.
  with pytest.raises(proxies.ProxyError, match=r"coords=9 is out of range \(q, the narrowest"):
    evaluate.main([f"--run={run_dir}", "--proxy=firstcoords", "--coords=2,9"])
  run = api.load_run(str(run_dir))
  with pytest.raises(proxies.ProxyError, match="coords=9 is out of range"):
    run.fit("firstcoords", [9])
  by_api = run.evaluate(run.fit("firstcoords", [2, 8]), ["iid", "unseen_depth"])
  assert [(r["coords"], r["agreement"]) for r in by_api.rows] == [
      (r["coords"], r["agreement"]) for r in rows]
  # Its option is a flag, validated like any other's; so are the other kinds' flags.
  with pytest.raises(SystemExit):
    evaluate.parse(["--help"])
  assert "firstcoords: the first coordinate kept" in capsys.readouterr().out
  evaluate.main([f"--run={run_dir}", "--proxy=firstcoords", "--start=4", "--splits=iid"])
  shifted = json.loads(
      (run_dir / "eval" / "firstcoords_layer1_head0_q+k_2_start4.json").read_text())
  assert shifted[0]["start"] == 4 and shifted[0]["coords"] == 2  # the kind's default sweep
  with pytest.raises(cli.UsageError, match="--k does not apply to firstcoords"):
    evaluate.main([f"--run={run_dir}", "--proxy=firstcoords", "--k=2"])
  with pytest.raises(cli.UsageError, match="--start does not apply to svd"):
    evaluate.main([f"--run={run_dir}", "--proxy=svd", "--start=1"])
  # The reproduction plans it (the plan has no values for a sweep called coords: the
  # kind's default sweep, unless the plan names the kind), and the figures and the report
  # label it, with no list edited.
  plan = reproduce.PLANS["smoke"]
  model = transformer.TransformerSites(tasks.load_trained(str(run_dir))[1])
  planned = [s for s in reproduce.specs(plan, model) if s.kind == "firstcoords"]
  assert [(s.heads, s.values) for s in planned] == [(((0, 0),), (2,)), (((1, 0),), (2,))]
  named = dataclasses.replace(plan, kind_values=(("firstcoords", (1, 4)),))
  assert {s.values for s in reproduce.specs(named, model) if s.kind == "firstcoords"} == {(1, 4)}
  too_wide = dataclasses.replace(plan, kind_values=(("firstcoords", (16,)),))
  with pytest.raises(proxies.ProxyError, match="coords=16 is out of range"):
    reproduce.specs(too_wide, model)  # before anything is trained
  assert "firstcoords" in aggregate.families()
  assert figures.sweep_axis("firstcoords") == "coordinates kept"
  group_rows = json.loads(
      (run_dir / "eval" / "firstcoords_layer1_head0_q+k_2-8_by_group.json").read_text())
  seeded = lambda rs: [dict(r, model_seed=0) for r in rs]
  path = tmp_path / "report.md"
  report.write(str(path), title="t", setup=[], rows=seeded(rows), group_rows=seeded(group_rows),
               splits=["iid", "unseen_depth"], layers=[1], train_depth=4, figures=[])
  assert "firstcoords coordinates 2" in path.read_text()
