"""Flax decoders of the paper's model families (Llama/Mistral/Qwen2, Falcon, Bloom)."""

from valueprobe_jax.models.config import ModelConfig, RopeScaling
from valueprobe_jax.models.decoder import Decoder, check_params, flatten_params
from valueprobe_jax.models.layers import KVCache, causal_mask, forward, param_shapes

__all__ = ["ModelConfig", "RopeScaling", "Decoder", "KVCache", "forward", "causal_mask",
           "param_shapes", "check_params", "flatten_params"]
