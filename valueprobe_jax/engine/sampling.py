"""Sampling math: one token per key from logits (temperature, top-k / top-p, an exact two-level
Gumbel-max draw), pure jax functions the decode loop calls once per step.

Randomness: sample i of a prompt with key ``k`` uses
``fold_in(fold_in(key(seed), crc32(k)), i)``, folded once more with the step index at each
step, so results do not depend on batch size, batch composition, prompt order or the device
mesh. Tokens are drawn by an exact two-level Gumbel-max (``two_level_gumbel_max``).

Two ways to process the logits before the draw (``SamplingParams.processing``, a static choice:
each is its own compiled program):
- ``"ours"``: temperature, then ``filter_logits`` (top-k by rank, nucleus over the top-k mass);
- ``"paper"``: transformers 4.45's processors (``processors.paper_logits``): repetition penalty
  over prompt + generated tokens of the sample, temperature, top-k (ties kept), top-p (ties cut
  by id), exactly as the paper's ``generate(do_sample=True, ...)``; ``paper_sample_step``.
Greedy (temperature 0) is the argmax of the raw logits ("ours") or of the repetition-penalised
logits ("paper", as transformers' greedy search with ``repetition_penalty``).
"""

from __future__ import annotations

import dataclasses
import math
import zlib

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from valueprobe_jax.engine import processors
from valueprobe_jax.errors import InputError

if TYPE_CHECKING:  # models.generation_config is a lower layer; imported for types only
    from valueprobe_jax.models.generation_config import GenerationConfig

# vocabulary block of the two-level Gumbel-max draw (about sqrt(V) for 32k-152k vocabularies)
_BLOCK = 256


PROCESSING = ("ours", "paper")


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature=0`` is greedy decoding; ``top_k=0`` and ``top_p=1`` disable
    those filters (applied in that order, after temperature, as Hugging Face does).

    ``processing``: ``"ours"`` (temperature, ``filter_logits``) or ``"paper"`` (transformers
    4.45's processors: ``repetition_penalty`` over the prompt and the sample's own tokens, then
    temperature, top-k, top-p; see the module docstring). ``repetition_penalty`` other than 1
    needs ``"paper"``. ``from_generation_config`` / ``ratings_from_generation_config`` give the
    paper's settings from a checkpoint's generation config."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    num_samples: int = 10
    seed: int = 0
    repetition_penalty: float = 1.0
    processing: str = "ours"

    @classmethod
    def from_generation_config(cls, gc: "GenerationConfig", *, temperature: float = 1.0,
                               max_new_tokens: int = 64, num_samples: int = 10,
                               seed: int = 0) -> "SamplingParams":
        """The paper's text method: ``generate(do_sample=True, temperature=1.0,
        max_new_tokens=64, num_return_sequences=10)``, top-k / top-p / repetition penalty from
        the checkpoint's generation config (transformers 4.45 defaults where it has none)."""
        return cls(temperature=temperature, top_k=gc.top_k, top_p=gc.top_p,
                   repetition_penalty=gc.repetition_penalty, max_new_tokens=max_new_tokens,
                   num_samples=num_samples, seed=seed, processing="paper")

    @classmethod
    def ratings_from_generation_config(cls, gc: "GenerationConfig", *, max_new_tokens: int = 20,
                                       num_samples: int = 1, seed: int = 0) -> "SamplingParams":
        """The paper's ratings: ``pipeline("text-generation", max_new_tokens=20)``, decoding
        entirely from the generation config. ``do_sample`` true: sampled at its temperature,
        top-k, top-p and penalty; false: greedy, i.e. the argmax of the repetition-penalised
        logits (transformers applies the penalty processor in greedy search too; temperature,
        top-k and top-p are then not used and change no argmax)."""
        return cls(temperature=gc.temperature if gc.do_sample else 0.0, top_k=gc.top_k,
                   top_p=gc.top_p, repetition_penalty=gc.repetition_penalty,
                   max_new_tokens=max_new_tokens, num_samples=num_samples, seed=seed,
                   processing="paper")

    def validate(self) -> None:
        if self.processing not in PROCESSING:
            raise InputError(f"processing: must be one of {', '.join(PROCESSING)}, "
                             f"got {self.processing!r}")
        if not (self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty)):
            raise InputError(f"repetition_penalty: must be a finite number > 0, "
                             f"got {self.repetition_penalty}")
        if self.repetition_penalty != 1.0 and self.processing != "paper":
            raise InputError(f"repetition_penalty: {self.repetition_penalty} needs "
                             f"processing='paper' ('ours' has no repetition penalty)")
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
    return _draw(blocks, mass, greedy, logp, keys, step, temperature, rows)



def _draw(blocks: jax.Array, mass: jax.Array, greedy: jax.Array, logp: jax.Array,
          keys: jax.Array, step: jax.Array, temperature: jax.Array,
          rows: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """The token of every key (two-level Gumbel-max over ``blocks``/``mass``, or ``greedy`` at
    temperature 0) and its raw log-probability; ``rows`` maps keys to logits rows."""
    step_keys = _step_keys(keys, step)
    if rows is None:
        rows = jnp.arange(logp.shape[0])
        sampled = jax.vmap(gumbel_draw)(step_keys, blocks, mass)
    else:
        sampled = jax.vmap(lambda k, r: gumbel_draw(k, blocks[r], mass[r]))(step_keys, rows)
    tok = jnp.where(temperature > 0, sampled, jnp.take(greedy, rows))
    return tok, logp[rows, tok]


class PaperSettings(NamedTuple):
    """The traced scalars of the ``"paper"`` program besides temperature and top-k:
    ``repetition_penalty`` and ``one_minus_top_p`` (``processors.top_p_threshold``: computed in
    double on the host, as transformers compares the cumulative probabilities with it)."""

    repetition_penalty: jax.Array
    one_minus_top_p: jax.Array

    @classmethod
    def of(cls, sp: SamplingParams) -> "PaperSettings":
        return cls(np.float32(sp.repetition_penalty), processors.top_p_threshold(sp.top_p))


def paper_process(logits: jax.Array, seen: jax.Array, temperature: jax.Array, top_k: jax.Array,
                 ps: PaperSettings) -> tuple[jax.Array, jax.Array]:
    """(penalised logits, processed logits) of float32 [B, V] logits with their seen masks [B, V]:
    transformers 4.45's repetition penalty -> temperature -> top-k -> top-p
    (``processors.paper_logits`` with traced settings); removed tokens at -inf. Temperature 0
    (greedy) processes at temperature 1: only the penalised logits' argmax is used then."""
    pen = processors.repetition_penalty(logits, seen, ps.repetition_penalty)
    x = processors.temperature(pen, jnp.where(temperature > 0, temperature, 1.0))
    # each filter sorts the vocabulary: skipped at run time when off (it would keep all)
    x = jax.lax.cond(top_k > 0,
                     lambda y: jnp.where(processors.top_k_mask(y, top_k), y, -jnp.inf),
                     lambda y: y, x)
    x = jax.lax.cond(ps.one_minus_top_p > 0,
                     lambda y: jnp.where(processors.top_p_threshold_mask(y, ps.one_minus_top_p),
                                         y, -jnp.inf),
                     lambda y: y, x)
    return pen, x


def paper_sample_step(logits: jax.Array, seen: jax.Array, keys: jax.Array, step: jax.Array,
                      temperature: jax.Array, top_k: jax.Array, ps: PaperSettings,
                      rows: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``sample_step`` with the paper's processing (``paper_process``; ``seen`` [N, V] is the
    mask of ids in prompt + generated tokens of each logits row). Same key scheme and two-level
    Gumbel-max draw; greedy is the argmax of the penalised logits. The logprobs returned are the
    raw model's, as ``sample_step``'s."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    pen, processed = paper_process(logits, seen, temperature, top_k, ps)
    greedy = jnp.argmax(pen, axis=-1).astype(jnp.int32)
    blocks, mass = block_masses(processed)
    return _draw(blocks, mass, greedy, logp, keys, step, temperature, rows)


__all__ = ["PROCESSING", "SamplingParams", "PaperSettings", "stable_hash", "filter_logits",
           "block_masses", "gumbel_draw", "two_level_gumbel_max", "sample_step", "paper_process",
           "paper_sample_step"]
