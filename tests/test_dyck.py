"""The sampler, the splits and the per-position annotations of Dyck strings."""

import numpy as np
import pytest

from data import dyck, dyck_batch, dyck_splits

SMALL = dyck_splits.DyckConfig(n_types=4, max_depth=4, max_length=40, n_train=3000,
                               n_test=100, short_length=16, ood_depth_cap=8, seed=3)


@pytest.fixture(scope="module")
def splits():
  return dyck_splits.generate(SMALL)


def test_every_string_is_valid_and_within_its_caps(splits):
  for name, strings in splits.items():
    deep = name in ("unseen_depth", "val_depth", "unseen_depth_plain")
    cap = SMALL.ood_depth_cap if deep else SMALL.max_depth
    for s in strings:
      assert dyck.is_valid(s, SMALL.n_types, cap), (name, s)
      assert SMALL.min_length <= len(s) <= SMALL.max_length


def test_split_sizes(splits):
  assert len(splits["train"]) == SMALL.n_train
  assert all(len(splits[s]) == SMALL.n_test for s in dyck_splits.TEST_SPLITS)


def test_structure_splits_are_what_they_are_named(splits):
  k = SMALL.n_types
  seen = {x for s in splits["train"] for x in dyck.segment_structures(s, k)}
  train = {s.tobytes() for s in splits["train"]}
  for s in splits["seen_struct"]:
    assert all(x in seen for x in dyck.segment_structures(s, k))
  for name in ("unseen_struct_short", "unseen_struct_long"):
    for s in splits[name]:
      assert any(x not in seen for x in dyck.segment_structures(s, k))
  assert all(len(s) <= SMALL.short_length for s in splits["unseen_struct_short"])
  assert all(len(s) > SMALL.short_length for s in splits["unseen_struct_long"])
  for name in ("iid", "seen_struct", "unseen_struct_short", "unseen_struct_long"):
    assert not any(s.tobytes() in train for s in splits[name]), name


def test_validation_and_plain_deep_splits(splits):
  """val_depth: unseen_depth's distribution (stratified the same way) from its own stream,
  sharing no string with it; unseen_depth_plain: any string deeper than m."""
  m, k = SMALL.max_depth, SMALL.n_types
  test = {s.tobytes() for s in splits["unseen_depth"]}
  assert not any(s.tobytes() in test for s in splits["val_depth"])
  deepest = lambda name: dyck.scored_key_depths(splits[name], k).max(axis=1)
  assert sorted(deepest("val_depth")) == sorted(deepest("unseen_depth"))  # the same shares
  assert all(dyck.max_depth(s, k) > m for s in splits["unseen_depth_plain"])
  # Not stratified: most plain strings go no deeper than m+1 or m+2.
  plain = np.array([dyck.max_depth(s, k) for s in splits["unseen_depth_plain"]])
  assert (plain <= m + 2).mean() > 0.5
  assert "val_depth" in dyck_splits.VALIDATION_SPLITS and "val_depth" not in dyck_splits.TEST_SPLITS
  iid = {s.tobytes() for s in splits["iid"] + splits["train"]}
  assert not any(s.tobytes() in iid for s in splits["val_iid"])
  assert all(dyck.max_depth(s, k) <= m for s in splits["val_iid"])


def test_long_shallow_control_matches_unseen_depth_in_length_not_depth(splits):
  """The control never goes deeper than m; its length histogram is unseen_depth's (by
  quotas) and its key depth x distance profile is much closer to it than iid's is."""
  m, k = SMALL.max_depth, SMALL.n_types
  control, target = splits["long_shallow"], splits["unseen_depth"]
  assert all(dyck.max_depth(s, k) <= m for s in control)
  match = dyck_splits.match_report(control, target, SMALL)
  assert match["length_tv"] <= 0.02
  assert match["key_depth_distance_tv"] < dyck_splits.match_report(
      splits["iid"], target, SMALL)["key_depth_distance_tv"]


def test_close_probability_of_one_half_is_the_automaton():
  """The control's sampler with every close probability 1/2 draws the plain automaton's
  strings bitwise (the other splits' streams are untouched by the control)."""
  draw = dict(n_types=3, depth_cap=5, min_length=4, max_length=30, chunk=256)
  a = dyck.sample(np.random.default_rng(1), 200, **draw)
  b = dyck.sample(np.random.default_rng(1), 200, close_prob=np.full(6, 0.5), **draw)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_unseen_depth_is_stratified_by_its_deepest_scored_close(splits):
  """Every unseen_depth string scores a close deeper than m; equal shares of them have their
  deepest scored close at each depth m+1 .. cap-2, so every such depth is measured."""
  m, cap = SMALL.max_depth, SMALL.ood_depth_cap
  strings = splits["unseen_depth"]
  assert all(dyck.is_valid(s, SMALL.n_types, depth_cap=cap) for s in strings)
  key_depths = dyck.scored_key_depths(strings, SMALL.n_types)
  deepest = key_depths.max(axis=1)
  strata = list(range(m + 1, cap - 1))
  counts = [int((deepest == d).sum()) for d in strata]
  assert sum(counts) == len(strings) == SMALL.n_test
  assert max(counts) - min(counts) <= 1  # equal shares
  # A scored close at depth D lies inside a scored close at every depth below it.
  for d in strata:
    assert (key_depths == d).sum() >= (deepest >= d).sum()
  assert max(dyck.max_depth(s, SMALL.n_types) for s in splits["train"]) == m


def test_scored_key_depths_match_a_stack_walk():
  rng = np.random.default_rng(0)
  strings = dyck.sample(rng, 200, n_types=3, depth_cap=6, min_length=4, max_length=40)
  got = dyck.scored_key_depths(strings, 3)
  for i, s in enumerate(strings):
    stack, want = [], np.zeros(got.shape[1], int)
    for j, x in enumerate(s.tolist()):
      if x < 3:
        stack.append(j)
      else:
        opened = stack.pop()
        want[j] = len(stack) + 1 if j - opened >= dyck.MIN_DISTANCE else 0
    np.testing.assert_array_equal(got[i], want)


def test_same_seed_same_data_and_seed_matters(splits):
  again = dyck_splits.generate(SMALL)
  for name in dyck_splits.SPLITS:
    assert [s.tolist() for s in again[name]] == [s.tolist() for s in splits[name]]
  other = dyck_splits.generate(dyck_splits.DyckConfig(**{**SMALL.__dict__, "seed": 4}))
  assert [s.tolist() for s in other["train"][:50]] != [s.tolist() for s in splits["train"][:50]]


def test_sampler_follows_the_automaton():
  rng = np.random.default_rng(0)
  strings = dyck.sample(rng, 20000, n_types=3, depth_cap=5, min_length=2, max_length=10_000)
  # With an empty stack after >= min_length brackets, END has probability 1/2: the number of
  # top-level segments beyond the first is geometric with mean 1.
  segments = np.array([len(dyck.segment_structures(s, 3)) for s in strings])
  first_long = np.array([len(dyck.segment_structures(s, 3)[0]) >= 2 for s in strings])
  assert abs((segments[first_long] - 1).mean() - 1.0) < 0.05
  # Bracket types are uniform.
  opens = np.concatenate([s[s < 3] for s in strings])
  assert np.allclose(np.bincount(opens) / len(opens), 1 / 3, atol=0.01)


def test_segment_structures_and_text_roundtrip():
  vocab = dyck.Vocab(3)
  ids = dyck.from_text("(a (b b) a) (c c)", vocab)
  assert ids.tolist() == [0, 1, 4, 3, 2, 5]
  assert dyck.segment_structures(ids, 3) == [b"(())", b"()"]
  assert dyck.to_text(ids, vocab) == "(a (b b) a) (c c)"
  assert dyck.from_text("START (a a) END", vocab).tolist() == [0, 3]
  with pytest.raises(ValueError, match="unknown token"):
    dyck.from_text("(a z)", vocab)


def test_vocab_spelling_follows_yao():
  tokens = dyck.Vocab(28).tokens()
  assert tokens[:2] == ["(a", "(b"] and tokens[26:28] == ["(aa", "(ab"]
  assert tokens[28] == "a)" and tokens[-3:] == ["START", "END", "PAD"]


def test_encode_annotates_every_position():
  vocab = dyck.Vocab(3)
  ids = dyck.from_text("(a (b b) (c c) a)", vocab)
  b = dyck_batch.encode([ids], vocab, 10)
  s, e, p = vocab.start, vocab.end, vocab.pad
  assert b.inputs[0].tolist() == [s, 0, 1, 4, 2, 5, 3, p, p, p]
  assert b.targets[0].tolist() == [0, 1, 4, 2, 5, 3, e, p, p, p]
  # gold: the close of the open on top of the stack when each target is predicted
  assert b.gold[0].tolist() == [-1, 3, 4, 3, 5, 3, -1, -1, -1, -1]
  assert b.depth[0].tolist() == [0, 1, 2, 1, 2, 1, 0, 0, 0, 0]
  assert b.distance[0].tolist() == [0, 0, 1, 0, 1, 5, 0, 0, 0, 0]
  assert b.scored("all_closes", 3)[0].tolist() == [0, 0, 1, 0, 1, 1, 0, 0, 0, 0]
  assert b.scored("yao", 3)[0].tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0]
  assert not b.scored("murty", 3).any()  # no close is >= 10 tokens from its open


def test_murty_positions_need_distance_ten():
  vocab = dyck.Vocab(2)
  # (a then four (b b) pairs, then a): the final close is 9 brackets after its open -> not
  # scored; with five pairs it is 11 after -> scored.
  near = dyck.from_text("(a " + "(b b) " * 4 + "a)", vocab)
  far = dyck.from_text("(a " + "(b b) " * 5 + "a)", vocab)
  b = dyck_batch.encode([near, far], vocab, 16)
  assert b.scored("murty", 2).sum(1).tolist() == [0, 1]
  assert b.distance[1].max() == 11


def test_length_buckets_are_deterministic_per_step(splits):
  vocab = dyck.Vocab(SMALL.n_types)
  sampler = dyck_batch.LengthBucketSampler(splits["train"], vocab, 42, 8, seed=1,
                                           buckets=(16,))
  again = dyck_batch.LengthBucketSampler(splits["train"], vocab, 42, 8, seed=1, buckets=(16,))
  widths = set()
  for step in (0, 7, 7, 123):
    a, b = sampler(step), again(step)
    assert (a["inputs"] == b["inputs"]).all() and (a["targets"] == b["targets"]).all()
    widths.add(a["inputs"].shape[1])
  assert widths <= {16, 42}
  assert (sampler(0)["inputs"].shape != sampler(1)["inputs"].shape
          or (sampler(0)["inputs"] != sampler(1)["inputs"]).any())


def test_an_unreachable_split_is_an_error_not_a_hang():
  tiny = dyck_splits.DyckConfig(n_types=3, max_depth=3, max_length=24, n_train=300, n_test=20,
                                short_length=10, ood_depth_cap=6, seed=1)
  with pytest.raises(dyck_splits.SplitError, match="'unseen_struct_short' found only 0 of 20"):
    dyck_splits.generate(tiny)
