"""Print a Dyck split in the Murty/Yao text format, or the dataset's manifest.

  python -m experiments.dyck_data --split=unseen_depth --n=5 [--depth=10 --types=20 ...]
  python -m experiments.dyck_data --manifest

The strings go to stdout, one per line (`data.dyck.read_text` reads them back); progress
and the data directory go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from data import dyck, dyck_splits, dyck_tfds
from experiments import cli


def main(argv: Sequence[str] | None = None) -> None:
  parser = cli.Parser(prog="python -m experiments.dyck_data",
                      description="Print a Dyck split, one string per line (Murty/Yao format).")
  parser.add_argument("--split", default="train", help=f"one of: {', '.join(dyck_splits.SPLITS)}")
  parser.add_argument("--n", type=int, default=None, help="print only the first N strings")
  parser.add_argument("--data_dir", default=os.path.join("runs", "tfds"))
  parser.add_argument("--manifest", action="store_true", help="print the manifest (JSON) instead")
  cli.add_dataclass_flags(parser, dyck_splits.DyckConfig,
                          rename={"max_depth": "depth", "n_types": "types"})

  def run(argv):
    args = parser.parse_args(argv)
    cli.check_choice("split", args.split, dyck_splits.SPLITS)
    if args.n is not None:
      cli.check_range("n", args.n, 0, 1 << 62)
    config = cli.from_flags(dyck_splits.DyckConfig, args)
    cli.ensure_writable(args.data_dir)
    log = lambda line: print(line, file=sys.stderr)  # stdout carries only the strings
    if args.manifest:
      print(json.dumps(dyck_tfds.manifest(config, args.data_dir, log), indent=2))
      return
    strings = dyck_tfds.load(config, args.data_dir, (args.split,), log)[args.split]
    vocab = dyck.Vocab(config.n_types)
    for s in strings[:args.n]:
      sys.stdout.write(dyck.to_text(s, vocab) + "\n")

  cli.run_main(run, argv)


if __name__ == "__main__":
  main()
