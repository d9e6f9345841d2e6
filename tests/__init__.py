"""Test helpers and tests; run with `python -m pytest`."""
