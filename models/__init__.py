"""Models and how the engine reaches them: the built-in Transformer (`transformer`), the
site interface any model is seen through (`sites`: `SiteModel`, and `LinenSites` for a Flax
Linen model; `nnx_sites` for a Flax NNX one), the training loop (`training`), checkpoints,
and the device mesh batches are split over (`mesh`)."""
