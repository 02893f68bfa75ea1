"""The FLOP model: what one forward of the engine's shapes costs, and the packer's price of a row.

Used by the planner (choosing a row length), by ``ScoreStats.flops`` and by the bench (achieved
GFLOP/s, compared with XLA's own cost analysis)."""

from __future__ import annotations

from valueprobe_jax.models.config import ModelConfig


def flops_estimate(cfg: ModelConfig, batch: int, length: int, keys: int, head: int) -> float:
    """FLOPs of one forward as executed: ``batch`` rows of ``length`` new tokens, attention over
    ``keys`` key slots (masked slots included: the kernel is dense), LM head at ``head``
    positions per row. Matmuls count 2 per multiply-add; norms and softmaxes are left out."""
    e, h, kv, d, m, n = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                         cfg.intermediate_size, cfg.num_layers)
    per_layer = e * (h + 2 * kv) * d + h * d * e + (3 if cfg.mlp == "gated" else 2) * e * m
    dense = 2.0 * batch * length * n * per_layer
    attention = 2.0 * 2.0 * batch * length * keys * h * d * n  # QK^T and PV
    lm_head = 2.0 * batch * head * e * cfg.vocab_size
    return dense + attention + lm_head


# The planner's price of an attention FLOP relative to a matmul FLOP: the dense masked
# attention (scores, mask, softmax over T x S per head) is memory-bound. Measured on a 2-core
# CPU with SmolLM2: time per token grows with the row length about 2.5x faster than its FLOPs.
ATTENTION_WEIGHT = 1.5


def row_cost(cfg: ModelConfig, length: int, keys: int) -> float:
    """The planner's cost of one row of ``length`` new tokens over ``keys`` key slots."""
    dense = flops_estimate(cfg, 1, length, 0, 0)
    return dense + ATTENTION_WEIGHT * (flops_estimate(cfg, 1, length, keys, 0) - dense)


__all__ = ["flops_estimate", "ATTENTION_WEIGHT", "row_cost"]
