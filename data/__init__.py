"""Datasets: Dyck-(k, m) strings and their splits, as TFDS builders and model-ready arrays."""
