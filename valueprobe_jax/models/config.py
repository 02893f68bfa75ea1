"""Architecture description shared by every decoder family.

One frozen dataclass covers Llama/Mistral/Qwen2, Falcon and Bloom: the families differ only in
switches (norm type, positional scheme, fused/parallel blocks, biases), so the compute lives in
one place (``layers.py``) and each family file only maps its Hugging Face config and weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1 "llama3" frequency scaling (the only scaling the paper's models use)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything the forward pass needs to know about an architecture."""

    family: str  # "llama" | "falcon" | "bloom"
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    norm: str = "rms"  # "rms" | "layer"
    norm_eps: float = 1e-5
    position: str = "rope"  # "rope" | "alibi"
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    qkv_bias: bool = False
    out_bias: bool = False  # bias on the attention output projection
    mlp: str = "gated"  # "gated" (SwiGLU) | "plain" (up -> act -> down)
    mlp_bias: bool = False
    activation: str = "silu"  # "silu" | "gelu" (exact) | "gelu_tanh"
    parallel_block: bool = False  # Falcon-7B: attention and MLP read the same normed input
    embed_norm: bool = False  # Bloom: LayerNorm right after the embedding
    tie_embeddings: bool = False
    max_position_embeddings: int = 8192
    dtype: str = "float32"  # parameter and activation dtype; softmax and norms run in float32

    @property
    def jnp_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    def replace(self, **kw: Any) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        if d.get("rope_scaling"):
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        return cls(**d)

    def num_params(self) -> int:
        """Parameter count (for FLOP and memory planning)."""
        e, h, kv, d, m, v, n = (self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim,
                                self.intermediate_size, self.vocab_size, self.num_layers)
        attn = e * (h + 2 * kv) * d + h * d * e
        mlp = (3 if self.mlp == "gated" else 2) * e * m
        emb = v * e * (1 if self.tie_embeddings else 2)
        return n * (attn + mlp) + emb
