#!/usr/bin/env bash
# Fills the ignored .whl/ folder with what bench/accelerator.py needs beyond JAX with CUDA,
# flax, optax and orbax (installed on a lent GPU machine, which reaches no package index).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3.11 -m pip download -q -d .whl --only-binary=:all: --python-version 3.11 \
  tensorflow-datasets array-record "etils[epath,epy]" importlib-resources scipy matplotlib tqdm
python3.11 -m pip wheel -q -w .whl --no-deps .
du -sh .whl
