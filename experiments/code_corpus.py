"""Print the manifest of a code corpus: files, characters and skipped files per language,
the vocabulary.

  python -m experiments.code_corpus [--source=language=directory:pattern ...] [--max_chars=N]
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from data import code
from experiments import cli


def main(argv: Sequence[str]) -> None:
  parser = cli.Parser(prog="python -m experiments.code_corpus", description=__doc__)
  parser.add_argument("--source", action="append", default=None,
                      help="language=directory:pattern, repeatable (default: Python stdlib, "
                      "/usr/include *.h, /usr/share/perl *.pm)")
  parser.add_argument("--train_language", default="python")
  parser.add_argument("--max_chars", type=int, default=code.CodeConfig.max_chars)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  config = code.CodeConfig(sources=tuple(args.source or code.default_sources()),
                           train_language=args.train_language, max_chars=args.max_chars,
                           seed=args.seed)
  _, manifest = code.build(config)
  print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
  cli.run_main(main)
