"""The commands and reports above the library: what a person runs, and what it writes.

  cli.py                 - command-line plumbing of every entry point (one-line errors, exit 2)
  reproduce.py           - the paper's Dyck half in one command; aggregate.py, report.py and
                           figures.py turn its rows into means over seeds, tables, figures
  depth_controls.py, depth_generalization.py, checkpoint_study.py, mechanism.py
                         - Dyck measurements: the depth gap deconfounded, the model's own
                           depth generalization, checkpoints, what a head's vectors carry
  induction.py, code_gaps.py, code_seeds.py (its tables: code_seed_tables.py)
                         - code completion: induction heads, gaps by file, tables over seeds
  dyck_data.py, code_corpus.py - print a dataset or its manifest
The library they use is below: `pipeline` (tasks, runs, evaluation, the API), `proxies`,
`models`, `data`; nothing there imports this package or exits the process."""
