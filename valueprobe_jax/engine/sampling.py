"""Sampling math: one token per key from logits (temperature, top-k / top-p, an exact two-level
Gumbel-max draw), pure jax functions the decode loop calls once per step.

Randomness: sample i of a prompt with key ``k`` uses
``fold_in(fold_in(key(seed), crc32(k)), i)``, folded once more with the step index at each
step, so results do not depend on batch size, batch composition, prompt order or the device
mesh. Tokens are drawn by an exact two-level Gumbel-max (``two_level_gumbel_max``).
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import jax
import jax.numpy as jnp

from valueprobe_jax.errors import InputError

# vocabulary block of the two-level Gumbel-max draw (about sqrt(V) for 32k-152k vocabularies)
_BLOCK = 256


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature=0`` is greedy decoding; ``top_k=0`` and ``top_p=1`` disable
    those filters (applied in that order, after temperature, as Hugging Face does)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    num_samples: int = 10
    seed: int = 0

    def validate(self) -> None:
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise InputError(f"temperature: must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise InputError(f"top_k: must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.num_samples < 1:
            raise InputError(f"num_samples: must be >= 1, got {self.num_samples}")
        if not 0 <= self.seed < 2**32:
            raise InputError(f"seed: must be in [0, 2**32), got {self.seed}")


def stable_hash(key: str) -> int:
    """A 32-bit hash of a prompt key that is the same in every process (unlike ``hash``)."""
    return zlib.crc32(key.encode("utf-8"))


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Top-k then nucleus (top-p) filtering of [B, V] logits; dropped entries become -inf.

    ``top_k`` (0 = off) and ``top_p`` are traced scalars, so changing them does not recompile.
    Ties at the threshold are all kept.
    """
    v = logits.shape[-1]
    s = -jnp.sort(-logits, axis=-1)  # descending
    idx = jnp.arange(v)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
    keep_k = idx[None, :] < k
    sk = jnp.where(keep_k, s, -jnp.inf)
    probs = jax.nn.softmax(sk, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
    keep = keep_k & (before < top_p)
    keep = keep.at[:, 0].set(True)
    n_keep = jnp.sum(keep, axis=-1)
    thresh = jnp.take_along_axis(s, (n_keep - 1)[:, None], axis=-1)
    return jnp.where(logits >= thresh, logits, -jnp.inf)


def block_masses(logits: jax.Array, block: int = _BLOCK) -> tuple[jax.Array, jax.Array]:
    """``logits [..., V]`` cut into blocks ``[..., nb, block]`` (padded with -inf) and each
    block's log-mass ``[..., nb]``: the part of a two-level draw that does not depend on the key."""
    v = logits.shape[-1]
    nb = -(-v // block)
    pad = [(0, 0)] * (logits.ndim - 1) + [(0, nb * block - v)]
    x = jnp.pad(logits, pad, constant_values=-jnp.inf).reshape(*logits.shape[:-1], nb, block)
    return x, jax.nn.logsumexp(x, axis=-1)  # -inf for a block of filtered / padding tokens


def gumbel_draw(key: jax.Array, blocks: jax.Array, mass: jax.Array) -> jax.Array:
    """The random half of ``two_level_gumbel_max``: blocks [nb, block], mass [nb] -> token."""
    nb, block = blocks.shape
    k_block, k_token = jax.random.split(key)
    b = jnp.argmax(mass + jax.random.gumbel(k_block, (nb,)))
    j = jnp.argmax(blocks[b] + jax.random.gumbel(k_token, (block,)))
    return (b * block + j).astype(jnp.int32)


def two_level_gumbel_max(key: jax.Array, logits: jax.Array, block: int = _BLOCK) -> jax.Array:
    """An exact draw from softmax(logits [V]) with Gumbel noise on ~2*sqrt(V) entries, not V.

    The vocabulary is cut into blocks of ``block`` tokens: Gumbel-max over the blocks' log-masses
    (logsumexp) picks a block with probability = its mass, then Gumbel-max inside that block picks
    a token with probability proportional to its own mass, so P(token) = p_token exactly. Random
    bits per draw fall from V to V/block + block (49152 -> 448 for SmolLM2), which matters on CPU.
    Unlike inverse-CDF sampling (a float32 cumsum over V), an argmax flips only when the two best
    perturbed scores are within rounding noise, so draws do not change with the device layout.
    """
    return gumbel_draw(key, *block_masses(logits, block))


def _sampling_logits(logits: jax.Array, temperature: jax.Array, top_k: jax.Array,
                     top_p: jax.Array) -> jax.Array:
    """Temperature, then top-k / top-p filtering (skipped at run time when both are off)."""
    scaled = logits / jnp.maximum(temperature, 1e-6)
    return jax.lax.cond((top_k > 0) | (top_p < 1.0),
                        lambda x: filter_logits(x, top_k, top_p), lambda x: x, scaled)


def _step_keys(keys: jax.Array, step: jax.Array) -> jax.Array:
    """Fold each row's token index (a scalar for all rows, or one per row) into its key."""
    steps = jnp.broadcast_to(jnp.asarray(step, jnp.uint32), keys.shape)
    return jax.vmap(jax.random.fold_in)(keys, steps)


def sample_step(logits: jax.Array, keys: jax.Array, step: jax.Array, temperature: jax.Array,
                top_k: jax.Array, top_p: jax.Array,
                rows: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """One token per key from float32 logits; returns (tokens [B], raw logprobs [B]).

    ``logits`` is [B, V], one row per key; or, with ``rows`` [B], [N, V] rows shared by the
    keys (key i draws from ``logits[rows[i]]``): the softmax, filters and block masses are then
    computed once per shared row, so thousands of samples of one prompt never materialise
    thousands of vocabulary-sized rows. ``step`` is the index of the token being drawn (scalar
    or [B]).
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    blocks, mass = block_masses(_sampling_logits(logits, temperature, top_k, top_p))
    step_keys = _step_keys(keys, step)
    if rows is None:
        rows = jnp.arange(logits.shape[0])
        sampled = jax.vmap(gumbel_draw)(step_keys, blocks, mass)
    else:
        sampled = jax.vmap(lambda k, r: gumbel_draw(k, blocks[r], mass[r]))(step_keys, rows)
    tok = jnp.where(temperature > 0, sampled, jnp.take(greedy, rows))
    return tok, logp[rows, tok]



__all__ = ["SamplingParams", "stable_hash", "filter_logits", "block_masses", "gumbel_draw",
           "two_level_gumbel_max", "sample_step"]
