"""vlx: vision-language pretraining in JAX/Flax, one train step for every family."""

__version__ = "0.1.0"
