"""The evaluation pipeline: tasks (`pipeline.tasks`: the `Task` contract and the registry,
one module per task), run directories, training one run, fitting and evaluating a proxy
sweep, and the Python API over them (`pipeline.api`). It sits above `data`, `models` and
`proxies` and below the commands and reports of `experiments/`; it raises domain errors
(`pipeline.errors.RunError`) and never exits the process."""
