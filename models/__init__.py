"""The Transformer, its training loop and its checkpoints."""
