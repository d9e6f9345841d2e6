"""Our faithfulness engine against TransformerLens on the same work, side by side in one run.

  pip install -e ".[peer]"     # torch and transformer-lens<4; never part of the default install
  python bench/transformer_lens_bench.py --run=runs/dyck-k20-m10-s0

The work: an svd sweep (ranks 1..16 by default) of one head's queries and keys (layer 1,
head 0), fitted once on 1,000 training strings, evaluated with the model on the run's `iid`
split: agreement, proxy accuracy, TV of the next-token distributions at Murty positions, and
the JSD of the head's attention at every real query.

TransformerLens does it the way its users do: the trained parameters loaded into a
`HookedTransformer` (checked to give our logits), the model run once per batch
(`run_with_cache` for its pattern), then one `run_with_hooks` per rank with hooks on
`blocks.L.attn.hook_q` / `hook_k` that replace the head's vectors by their projection and a
hook on `hook_pattern` that reads the simplified attention; batches of 256 strings in the
split's order, padded to their longest string. Ours is `faithfulness.evaluate`: one compiled
program for the whole sweep, length buckets and read-out slots.

Both are timed after one warm-up pass (our compilation is printed apart), best of
--repeats. The metrics must agree to --tolerance, else the script exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

try:
  import torch  # noqa: E402
  from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
except ImportError:
  sys.exit("bench/transformer_lens_bench.py needs the peer extra: pip install -e '.[peer]'")

import proxies  # noqa: E402
from experiments import cli  # noqa: E402
from models import transformer  # noqa: E402
from pipeline import api, rundir, tasks  # noqa: E402
from proxies import faithfulness  # noqa: E402

COMPARED = ("agreement", "accuracy_proxy", "accuracy_model", "attention_jsd", "tv")


def hooked_transformer(cfg: transformer.ModelConfig, params) -> HookedTransformer:
  """Our parameters in a HookedTransformer of the same architecture (pre-LN, learned
  positions, tanh GELU as Flax's default, LayerNorm epsilon 1e-6, no q/k/v/out biases)."""
  tl_cfg = HookedTransformerConfig(
      n_layers=cfg.n_layers, d_model=cfg.d_model, n_ctx=cfg.seq_len, d_head=cfg.d_head,
      n_heads=cfg.n_heads, d_mlp=cfg.d_mlp, d_vocab=cfg.vocab_size, act_fn="gelu_new",
      normalization_type="LN", eps=1e-6, positional_embedding_type="standard",
      default_prepend_bos=False, device="cpu")
  model = HookedTransformer(tl_cfg)
  t = lambda a: torch.from_numpy(np.array(a, np.float32))
  state = {"embed.W_E": t(params["embed"]["embedding"]), "pos_embed.W_pos": t(params["positions"]),
           "ln_final.w": t(params["ln_final"]["scale"]), "ln_final.b": t(params["ln_final"]["bias"]),
           "unembed.W_U": t(params["unembed"]["kernel"]), "unembed.b_U": t(params["unembed"]["bias"])}
  for layer in range(cfg.n_layers):
    p, b = params[f"block_{layer}"], f"blocks.{layer}"
    a = p["attention"]
    state.update({
        f"{b}.ln1.w": t(p["ln_attention"]["scale"]), f"{b}.ln1.b": t(p["ln_attention"]["bias"]),
        f"{b}.ln2.w": t(p["ln_mlp"]["scale"]), f"{b}.ln2.b": t(p["ln_mlp"]["bias"]),
        f"{b}.attn.W_Q": t(a["query"]["kernel"]).permute(1, 0, 2),  # [M, H, D] -> [H, M, D]
        f"{b}.attn.W_K": t(a["key"]["kernel"]).permute(1, 0, 2),
        f"{b}.attn.W_V": t(a["value"]["kernel"]).permute(1, 0, 2),
        f"{b}.attn.W_O": t(a["out"]["kernel"]),  # [H, D, M]
        f"{b}.attn.b_Q": torch.zeros(cfg.n_heads, cfg.d_head),
        f"{b}.attn.b_K": torch.zeros(cfg.n_heads, cfg.d_head),
        f"{b}.attn.b_V": torch.zeros(cfg.n_heads, cfg.d_head),
        f"{b}.attn.b_O": torch.zeros(cfg.d_model),
        f"{b}.mlp.W_in": t(p["mlp_in"]["kernel"]), f"{b}.mlp.b_in": t(p["mlp_in"]["bias"]),
        f"{b}.mlp.W_out": t(p["mlp_out"]["kernel"]), f"{b}.mlp.b_out": t(p["mlp_out"]["bias"])})
  missing, unexpected = model.load_state_dict(state, strict=False)
  left = [k for k in missing if not k.endswith((".mask", ".IGNORE"))]
  if left or unexpected:
    raise RuntimeError(f"state dict mismatch: missing {left}, unexpected {unexpected}")
  return model.eval()


def entropy(p: torch.Tensor) -> torch.Tensor:
  return -torch.special.xlogy(p, p).sum(-1)


def transformer_lens_sweep(model: HookedTransformer, sweep: proxies.Proxy, arrays, lo: int,
                           hi: int, pad_id: int, batch_size: int) -> list[dict]:
  """The sweep as TransformerLens users run it; one dict of metrics per setting."""
  (layer, head), = sweep.heads
  arrays_of_head = sweep.arrays[0]
  q_name, k_name = f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"
  pattern_name = f"blocks.{layer}.attn.hook_pattern"
  settings = [{s: (torch.from_numpy(arrays_of_head[f"mean_{s}"][i]),
                   torch.from_numpy(arrays_of_head[f"projector_{s}"][i])) for s in ("q", "k")}
              for i in range(sweep.size)]
  sums = np.zeros((len(settings), 7))  # n, n_query, correct_model, correct_proxy, agree, tv, jsd
  inputs_NxL = arrays["inputs"]
  for start in range(0, len(inputs_NxL), batch_size):
    rows = slice(start, start + batch_size)
    width = int((inputs_NxL[rows] != pad_id).sum(1).max())
    tokens = torch.from_numpy(inputs_NxL[rows, :width].astype(np.int64))
    gold = torch.from_numpy(arrays["gold"][rows, :width].astype(np.int64))
    scored = torch.from_numpy(arrays["scored"][rows, :width])
    query = tokens != pad_id
    with torch.inference_mode():
      logits, cache = model.run_with_cache(tokens, names_filter=pattern_name)
      pattern = cache[pattern_name][:, head]
      probs = logits.softmax(-1)
      predicted = logits[..., lo:hi].argmax(-1) + lo
      h_pattern = entropy(pattern)
      for i, setting in enumerate(settings):
        def project(act, hook, site=None):
          mean, projector = setting[site]
          act[:, :, head] = mean + (act[:, :, head] - mean) @ projector
          return act

        seen = {}
        hooks = [(q_name, lambda a, hook: project(a, hook, "q")),
                 (k_name, lambda a, hook: project(a, hook, "k")),
                 (pattern_name, lambda a, hook: seen.update(pattern=a[:, head]))]
        logits_p = model.run_with_hooks(tokens, fwd_hooks=hooks)
        predicted_p = logits_p[..., lo:hi].argmax(-1) + lo
        tv = 0.5 * (probs - logits_p.softmax(-1)).abs().sum(-1)
        p, q = pattern, seen["pattern"]
        jsd = (entropy(0.5 * (p + q)) - 0.5 * (h_pattern + entropy(q))).clamp(min=0)
        sums[i] += [scored.sum(), query.sum(), ((predicted == gold) & scored).sum(),
                    ((predicted_p == gold) & scored).sum(),
                    ((predicted_p == predicted) & scored).sum(), (tv * scored).sum(),
                    (jsd * query).sum()]
  n, n_query = sums[:, 0], sums[:, 1]
  return [{"accuracy_model": s[2] / s[0], "accuracy_proxy": s[3] / s[0],
           "agreement": s[4] / s[0], "tv": s[5] / s[0], "attention_jsd": s[6] / s[1]}
          for s in sums]


def best_of(fn, repeats: int) -> tuple[float, object]:
  times, out = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return min(times), out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", default=None, help="a trained Dyck run (default: the latest)")
  parser.add_argument("--ranks", type=cli.int_list, default=list(range(1, 17)))
  parser.add_argument("--layer", type=int, default=1)
  parser.add_argument("--head", type=int, default=0)
  parser.add_argument("--split", default="iid")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tolerance", type=float, default=1e-5)
  args = parser.parse_args()
  try:
    run_dir = args.run or rundir.latest_run(task="dyck")
    task, model_cfg, params = tasks.load_trained(run_dir)
    # On 1000 training strings (or all, if fewer): the API's default.
    run = api.Run(task, model_cfg, params)
    sweep = run.fit("svd", args.ranks, heads=[(args.layer, args.head)]).proxy
  except cli.BAD_INPUT as e:
    sys.exit(f"{os.path.basename(sys.argv[0])}: error: {e}")
  arrays = task.eval_arrays(args.split)
  decision = task.decision()
  tl_model = hooked_transformer(model_cfg, params)

  # The same logits from both implementations before anything is timed.
  sample = arrays["inputs"][:8]
  ours = np.asarray(transformer.Transformer(model_cfg).apply({"params": params}, sample))
  with torch.inference_mode():
    theirs = tl_model(torch.from_numpy(sample.astype(np.int64))).numpy()
  logit_diff = float(np.abs(ours - theirs).max())

  program = faithfulness.FaithfulnessProgram(model_cfg, decision, task.pad_id)
  ours_fn = lambda: faithfulness.evaluate(program, params, sweep, arrays, args.batch_size,
                                          task.pad_id).summary()
  tl_fn = lambda: transformer_lens_sweep(tl_model, sweep, arrays, decision.lo, decision.hi,
                                         task.pad_id, args.batch_size)
  start = time.perf_counter()
  ours_fn()  # compiles every batch shape
  first = time.perf_counter() - start
  tl_fn()  # warm-up
  ours_s, ours_rows = best_of(ours_fn, args.repeats)
  tl_s, tl_rows = best_of(tl_fn, args.repeats)

  diff = {m: max(abs(a[m] - b[m]) for a, b in zip(ours_rows, tl_rows)) for m in COMPARED}
  n, tokens = len(arrays["inputs"]), int((arrays["inputs"] != task.pad_id).sum())
  print(f"logits: max |ours - TransformerLens| {logit_diff:.1e} on 8 strings")
  print("metrics: max |ours - TransformerLens| over the sweep: "
        + ", ".join(f"{m} {d:.1e}" for m, d in diff.items()))
  print(f"peer: svd ranks {args.ranks[0]}..{args.ranks[-1]} ({len(args.ranks)} settings) on "
        f"layer {args.layer} head {args.head}, {n} {args.split} strings: ours {ours_s:.3f} s "
        f"(first call {first:.3f} s with {len(program.shapes)} compilations), TransformerLens "
        f"{tl_s:.3f} s, ratio {tl_s / ours_s:.1f}x (best of {args.repeats}, batches of "
        f"{args.batch_size}, torch {torch.__version__} with {torch.get_num_threads()} threads); "
        f"ours {len(args.ranks) * tokens / ours_s:,.0f} proxy-token evaluations/s")
  if max(diff.values()) > args.tolerance:
    sys.exit(f"metrics differ by more than {args.tolerance}: {diff}")


if __name__ == "__main__":
  main()
