"""valueprobe_jax: probing the value orientation of LLMs with JAX/Flax."""

__version__ = "0.1.0"
