"""The paper's logits processors (transformers 4.45's ``generate`` with ``do_sample=True``), in jax.

The released code samples with ``model.generate(do_sample=True, temperature=1.0, ...)`` and takes
every other setting from the checkpoint's generation_config.json over transformers' defaults
(``models.generation_config.GenerationConfig``). transformers applies, in this order:

1. ``RepetitionPenaltyLogitsProcessor`` (when repetition_penalty != 1): every token id present
   anywhere in the sequence so far, prompt included, gets ``logit * p`` if negative else ``logit / p``;
2. ``TemperatureLogitsWarper`` (when temperature != 1): ``logits / T``;
3. ``TopKLogitsWarper`` (when top_k != 0): tokens below the k-th largest logit -> -inf (ties kept);
4. ``TopPLogitsWarper`` (when top_p < 1): logits sorted ascending, softmax, cumulative sum; tokens
   whose cumulative probability is <= 1 - top_p -> -inf, the largest always kept.

Each function here reproduces one of them exactly on [batch, vocab] float32 logits and accepts
Python numbers or traced scalars, so a jitted decode loop can change the settings without
recompiling. "Present so far" is a boolean [batch, vocab] mask (``seen_mask``) that the loop
updates with each drawn token (``mark_seen``). Pure ``jax.numpy``; no other engine module.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

Scalar = float | int | jax.Array


class SamplingSettings(Protocol):
    """What ``paper_logits`` reads (``models.generation_config.GenerationConfig`` has these)."""

    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float


def seen_mask_from_ids(ids: jax.Array, vocab_size: int,
                       valid: jax.Array | None = None) -> jax.Array:
    """[batch, vocab] bool: which token ids occur in ``ids`` [batch, length] (where ``valid``)."""
    ids = jnp.asarray(ids, jnp.int32)
    if valid is None:
        valid = jnp.ones(ids.shape, bool)
    rows = jnp.broadcast_to(jnp.arange(ids.shape[0])[:, None], ids.shape)
    mask = jnp.zeros((ids.shape[0], vocab_size), bool)
    # padding entries write False to id 0, which can only clear nothing: .max keeps any True
    return mask.at[rows, jnp.where(valid, ids, 0)].max(valid)


def mark_seen(seen_mask: jax.Array, tokens: jax.Array) -> jax.Array:
    """``seen_mask`` with the newly drawn ``tokens`` [batch] marked present (one decode step)."""
    return seen_mask.at[jnp.arange(seen_mask.shape[0]), tokens].set(True)


def _divide(x: jax.Array, d: Scalar) -> jax.Array:
    """``x / d`` rounded as a true float32 division, like torch. XLA rewrites a division by a
    broadcast scalar into a multiplication by its reciprocal (1 ulp off for about half the
    entries); the barrier keeps the divisor an opaque array."""
    return x / jax.lax.optimization_barrier(jnp.broadcast_to(jnp.asarray(d, x.dtype), x.shape))


def repetition_penalty(logits: jax.Array, seen_mask: jax.Array, penalty: Scalar) -> jax.Array:
    """RepetitionPenaltyLogitsProcessor: seen ids' logits ``* penalty`` if < 0 else ``/ penalty``."""
    penalised = jnp.where(logits < 0, logits * penalty, _divide(logits, penalty))
    return jnp.where(seen_mask, penalised, logits)


def temperature(logits: jax.Array, temp: Scalar) -> jax.Array:
    """TemperatureLogitsWarper: ``logits / temp`` (temp > 0; 1.0 leaves the logits unchanged)."""
    return _divide(logits, temp)


def top_k_mask(logits: jax.Array, top_k: Scalar, min_tokens_to_keep: int = 1) -> jax.Array:
    """TopKLogitsWarper's kept set, [batch, vocab] bool: logits >= the k-th largest (ties kept).

    k = min(max(top_k, min_tokens_to_keep), vocab); ``top_k`` 0 (or None upstream) keeps all,
    as transformers then adds no top-k warper."""
    v = logits.shape[-1]
    top_k = jnp.asarray(top_k, jnp.int32)
    k = jnp.minimum(jnp.maximum(top_k, min_tokens_to_keep), v)
    desc = -jnp.sort(-logits, axis=-1)
    kth = jnp.take_along_axis(desc, jnp.broadcast_to(k - 1, logits.shape[:-1])[..., None], axis=-1)
    return (logits >= kth) | (top_k <= 0)


def _one_minus(top_p: Scalar) -> Scalar:
    # transformers computes 1 - top_p in Python (double) and compares a float32 tensor with it;
    # for a Python top_p do the same, so the float32 threshold is the one transformers uses
    return 1.0 - float(top_p) if isinstance(top_p, (int, float)) else 1.0 - top_p


def top_p_mask(logits: jax.Array, top_p: Scalar, min_tokens_to_keep: int = 1) -> jax.Array:
    """TopPLogitsWarper's kept set, [batch, vocab] bool.

    As transformers: sort ascending (ties in index order: a stable sort), softmax, cumulative sum;
    drop sorted positions whose cumulative probability is <= 1 - top_p except the last
    ``min_tokens_to_keep``. Of several tokens tied at the cut, the lower ids go first. top_p >= 1
    keeps all (transformers adds no top-p warper then, so even zero-probability tokens stay)."""
    return (top_p_threshold_mask(logits, _one_minus(top_p), min_tokens_to_keep)
            | (jnp.asarray(top_p) >= 1.0))


def top_p_threshold(top_p: float) -> np.float32:
    """``1 - top_p`` as transformers compares with it: computed in double on the host, then
    float32 (``1 - float32(top_p)`` on the device can differ in the last bit)."""
    return np.float32(1.0 - float(top_p))


def top_p_threshold_mask(logits: jax.Array, one_minus_top_p: Scalar,
                         min_tokens_to_keep: int = 1) -> jax.Array:
    """``top_p_mask`` given the threshold ``1 - top_p`` (``top_p_threshold``), e.g. as a traced
    scalar of a compiled loop; a threshold <= 0 (top_p >= 1) keeps all."""
    v = logits.shape[-1]
    order = jnp.argsort(logits, axis=-1, stable=True)
    asc = jnp.take_along_axis(logits, order, axis=-1)
    cum = jnp.cumsum(jax.nn.softmax(asc, axis=-1), axis=-1)
    drop_sorted = cum <= jnp.asarray(one_minus_top_p, logits.dtype)
    drop_sorted = drop_sorted & (jnp.arange(v) < v - min_tokens_to_keep)
    rows = jnp.broadcast_to(jnp.arange(logits.shape[0])[:, None], logits.shape)
    drop = jnp.zeros(logits.shape, bool).at[rows, order].set(drop_sorted)
    return ~drop | (jnp.asarray(one_minus_top_p) <= 0)


def paper_logits(logits: jax.Array, seen_mask: jax.Array | None,
                 gc: SamplingSettings) -> jax.Array:
    """Processed logits of transformers 4.45 sampling: repetition penalty -> temperature ->
    top-k -> top-p, removed tokens at -inf. ``softmax`` of the result is the distribution
    ``generate(do_sample=True)`` draws from; its argmax is the greedy (do_sample=False) token.

    ``gc``'s fields may be Python numbers or traced scalars; None and the neutral values
    (penalty 1, temperature 1, top_k 0, top_p 1) switch a step off, as in transformers.
    ``seen_mask`` [batch, vocab]: ids present in prompt + generated tokens (None: no penalty).
    """
    x = jnp.asarray(logits, jnp.float32)
    penalty = 1.0 if gc.repetition_penalty is None else gc.repetition_penalty
    if seen_mask is not None:
        x = repetition_penalty(x, seen_mask, penalty)
    x = temperature(x, 1.0 if gc.temperature is None else gc.temperature)
    x = jnp.where(top_k_mask(x, 0 if gc.top_k is None else gc.top_k), x, -jnp.inf)
    return jnp.where(top_p_mask(x, 1.0 if gc.top_p is None else gc.top_p), x, -jnp.inf)


__all__ = ["SamplingSettings", "seen_mask_from_ids", "mark_seen", "repetition_penalty",
           "temperature", "top_k_mask", "top_p_mask", "top_p_threshold", "top_p_threshold_mask",
           "paper_logits"]
