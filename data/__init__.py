"""Datasets, each a pure function of its config: Dyck-(k, m) strings and their splits
(`dyck`, `dyck_batch`, `dyck_tfds`) and a character-level code corpus of this machine's
source trees (`code`, `code_batch`, `code_tfds`), as TFDS builders and model-ready arrays.
What a task makes of them (scoring, groups) is `pipeline.tasks`'."""
