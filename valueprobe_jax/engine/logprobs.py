"""Next-token log-probabilities after one token sequence: a plain causal forward, the simplest
look inside a model (``valueprobe logprobs``) and a reference for the packed scorer's tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from valueprobe_jax.models import causal_mask, forward
from valueprobe_jax.models.config import ModelConfig


def next_token_logprobs(cfg: ModelConfig, params: Any, ids: Sequence[int]) -> np.ndarray:
    """Log-softmax over the vocabulary at the position after ``ids`` (float32 [vocab])."""
    t = len(ids)
    tokens = jnp.asarray([ids], jnp.int32)
    logits, _ = forward(cfg, params, tokens, jnp.arange(t, dtype=jnp.int32)[None],
                        causal_mask(jnp.ones((1, t), bool)), logits_at=jnp.asarray([[t - 1]]))
    return np.asarray(jax.nn.log_softmax(logits[0, 0]))


__all__ = ["next_token_logprobs"]
