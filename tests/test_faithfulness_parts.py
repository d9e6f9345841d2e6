"""The faithfulness engine's parts on their own: the program as a pure function (the same
sums called as it is, jitted, and compiled by `FaithfulnessProgram`), and the one capture
path (`proxies.capture`) that the mechanism measurement and the induction score share, run
on a model reached through an adapter."""

import functools

import jax
import numpy as np
import pytest

from experiments import induction, mechanism
from models import transformer
from models.sites import Site
from proxies import batching, faithfulness, metrics, program
from pipeline import api
from tests import test_own_model as own
from tests.tiny import CFG, PAD


class _Task:
  """Random token rows, the second split half padded: enough to fit a proxy on."""

  splits, scorings, pad_id, n_train, strata = ("a",), ("all",), PAD, 24, {}
  groups = {"parity": ["even", "odd"]}

  def __init__(self, inputs):
    self.inputs = inputs

  def fit_inputs(self, n):
    return self.inputs[:n]


def test_the_program_is_a_pure_function_with_and_without_jit(params, inputs):
  proxy = api.Run(_Task(inputs), CFG, params).fit("svd", (1, 3), heads=[(1, 0)],
                                                  n_fit=24).proxy
  decision, groups = metrics.Decision(0, PAD), {"parity": 2}
  compiled = faithfulness.FaithfulnessProgram(CFG, decision, PAD, groups,
                                              settings_per_step=1)
  batch = {"inputs": inputs[:8], "gold": np.roll(inputs[:8], -1, 1),
           "scored": inputs[:8] != PAD, "parity": (inputs[:8] % 2).astype(np.int32)}
  slots = batching.read_out_slots(batch, groups, compiled.mesh)
  assert slots["rows"].shape[0] in (8 * CFG.seq_len // 4, 8 * CFG.seq_len)
  sums = functools.partial(program.batch_sums, model=transformer.TransformerSites(CFG),
                           decision=decision, pad_id=PAD, groups=groups)
  arguments = (params, proxy, batch["inputs"], {"parity": batch["parity"]}, slots)
  eager, jitted = sums(*arguments), jax.jit(sums)(*arguments)
  by_program = compiled(params, proxy, batch)
  assert set(eager) == {"sequence", "parity"}
  for part in eager:
    assert set(eager[part]) == set(faithfulness.SUMS)
    for name in faithfulness.SUMS:
      expected = np.asarray(by_program[part][name])
      assert expected.shape[-1] == (8 if part == "sequence" else 2)
      np.testing.assert_array_equal(np.asarray(jitted[part][name]), expected)
      np.testing.assert_allclose(np.asarray(eager[part][name]), expected, rtol=1e-5,
                                 atol=1e-5)


def test_a_group_kept_per_string_adds_up_to_its_sums_and_changes_nothing_else(params, inputs):
  """`sequence_groups` (the scan's switch): per string per bucket, summing over strings to
  the group's sums and over buckets to the strings' own; every other sum is unchanged."""
  proxy = api.Run(_Task(inputs), CFG, params).fit("svd", (1, 3), heads=[(1, 0)],
                                                  n_fit=24).proxy
  decision, groups = metrics.Decision(0, PAD), {"parity": 2}
  arrays = {"inputs": inputs, "gold": np.roll(inputs, -1, 1), "scored": inputs != PAD,
            "parity": (inputs % 2).astype(np.int32)}
  plain = faithfulness.evaluate(faithfulness.FaithfulnessProgram(CFG, decision, PAD, groups),
                                params, proxy, arrays, 8, PAD)
  kept = faithfulness.evaluate(
      faithfulness.FaithfulnessProgram(CFG, decision, PAD, groups, sequence_groups=("parity",)),
      params, proxy, arrays, 8, PAD)
  assert plain.by_sequence == {}
  cells = kept.by_sequence["parity"]
  assert cells["agree"].shape == (2, len(inputs), 2)  # [P, N, G]
  assert cells["n_scored"].shape == (len(inputs), 2)
  for name in ("agree", "n_scored"):
    np.testing.assert_allclose(cells[name].sum(-2), kept.groups["parity"][name], atol=1e-4)
    np.testing.assert_allclose(cells[name].sum(-1), kept.sequence[name], atol=1e-4)
  for name in faithfulness.SUMS:
    np.testing.assert_array_equal(kept.sequence[name], plain.sequence[name])
  with pytest.raises(ValueError, match="sequence group 'depth' is none of the groups"):
    faithfulness.FaithfulnessProgram(CFG, decision, PAD, groups, sequence_groups=("depth",))


def test_capture_reads_any_site_model_as_the_rest_of_the_model_saw_it(params, inputs):
  targets = [(1, 1, "q"), (0, 0, "pattern"), (1, None, "resid_pre")]
  got = faithfulness.capture(CFG, params, inputs, targets, pad_id=PAD, batch_size=16)
  assert [g.shape for g in got] == [(24, 12, 8), (24, 12, 12), (24, 12, 16)]
  # Jitted, against the model run op by op: equal up to float rounding.
  np.testing.assert_allclose(got[0], transformer.capture(CFG, params, inputs, 1, "q")[:, :, 1],
                             atol=1e-5)
  np.testing.assert_allclose(got[1],
                             transformer.capture(CFG, params, inputs, 0, "pattern")[:, 0],
                             atol=1e-5)
  vectors, = faithfulness.collect_activations(CFG, params, inputs, PAD, [(1, 1)], ["q"],
                                              batch_size=16)  # the same program: bitwise
  np.testing.assert_array_equal(vectors["q"], got[0][inputs != PAD])


@pytest.fixture(scope="module")
def own_params():
  return transformer.init_params(own.CFG, seed=0)


def test_the_induction_score_and_the_mechanism_run_on_a_model_an_adapter_reaches(own_params):
  theirs, their_params = own.user_model(own.ALL_SITES), own.user_params(own_params)
  ours, seed_args = transformer.TransformerSites(own.CFG), dict(n=8, seed=0)
  a, baseline = induction.induction_scores(own.CFG, own_params, 10, **seed_args)
  b, same = induction.induction_scores(theirs, their_params, 10, seq_len=own.CFG.seq_len,
                                       **seed_args)
  np.testing.assert_allclose(b, a, atol=1e-5)
  assert same == baseline
  with pytest.raises(ValueError, match="needs seq_len"):
    induction.induction_scores(theirs, their_params, 10, **seed_args)
  tokens = own.Task().inputs["a"]
  keys = lambda model, p: np.asarray(mechanism.strongest_keys(model, 1, 0)(p, None, tokens))
  np.testing.assert_array_equal(keys(theirs, their_params), keys(ours, own_params))
  # Where the model has no pattern site, both say so before anything runs.
  bare = own.user_model({Site.Q: own.CFG.d_head, Site.K: own.CFG.d_head})
  with pytest.raises(ValueError, match="pattern site; it has: k, q"):
    keys(bare, their_params)
  with pytest.raises(ValueError, match="exposes no pattern site; it has: k, q"):
    induction.induction_scores(bare, their_params, 10, seq_len=own.CFG.seq_len, **seed_args)
