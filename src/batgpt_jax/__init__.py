"""batgpt-jax: bidirectional (L2R and R2L) pretraining of BatGPT-style language models in JAX."""
