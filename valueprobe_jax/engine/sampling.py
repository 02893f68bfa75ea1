"""Text generation for the *text* method: a jitted decode loop with a KV cache.

The sampler owns the decode loop and its cache; the model (``models.forward`` for the prefill,
``models.decode.decode_step`` for the loop) knows nothing about prompts or samples.

- Prefill: each prompt runs through the model once, left-padded to its length bucket P (slots
  ``P-n .. P-1`` hold a prompt of n tokens at positions 0..n-1), in power-of-two batches, so jit
  compiles once per (bucket, batch size) and no padding prompt is ever run.
- Decode: up to ``max_prompts`` prompts (shortest first) share one ``jax.lax.while_loop``. Their
  keys/values are held once (``SplitCache``: the N samples of a prompt read the same entry, no
  copy per sample) and each of the ``max_batch`` rows holds only its own new tokens. The
  (prompt, sample) pairs queue up; a row takes the next pair the step after its sample stops
  (EOS, the template's end-of-turn token, or ``max_new_tokens``), so rows do not idle waiting
  for the longest sample of a batch. When the queue is empty the busy rows move to loops with
  half as many rows, down to 4, so a few long samples do not pay for idle rows either.
  Temperature, top-k and top-p are traced scalars.

Randomness: sample i of a prompt with key ``k`` uses
``fold_in(fold_in(key(seed), crc32(k)), i)``, folded once more with the step index at each
step, so results do not depend on batch size, batch composition, prompt order or the device
mesh. Tokens are drawn by an exact two-level Gumbel-max (``two_level_gumbel_max``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.decode import SplitCache, decode_step, empty_generated, prompt_part
from valueprobe_jax.models.layers import KVCache, Params, forward
from valueprobe_jax.parallel.sharding import jit_with_shardings

# finish codes used inside the jitted loop
_LENGTH, _EOS, _END_OF_TURN = 0, 1, 2
_FINISH = {_LENGTH: "length", _EOS: "eos", _END_OF_TURN: "end_of_turn"}

# vocabulary block of the two-level Gumbel-max draw (about sqrt(V) for 32k-152k vocabularies)
_BLOCK = 256

# prompt-length buckets: powers of two and 1.5x powers of two from 16 up
_MIN_BUCKET = 16


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


@dataclasses.dataclass(frozen=True)
class Generation:
    """One sampled continuation.

    ``token_ids`` are the generated tokens including the stop token when there is one; ``text``
    is their decoding without the stop token (special tokens skipped). ``logprobs`` are the
    model's log-probabilities of each token in ``token_ids`` under the unmodified distribution
    (temperature 1, no top-k/top-p), useful for checks and analysis.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str  # "eos" | "end_of_turn" | "length"
    logprobs: tuple[float, ...] = ()


@dataclasses.dataclass
class SamplerStats:
    """What one ``generate`` call did (for benchmarks and tests): every prompt is prefilled once
    (``prefill_rows`` prompts in ``prefill_calls`` calls); ``decode_calls`` decode loops ran on
    ``decode_rows`` rows in total for ``live_rows`` real samples. ``decode_steps`` counts sampling
    steps (the first token, drawn from the prefill logits, then one per loop iteration);
    ``row_steps`` the tokens fed through the model (rows busy with a live sample, summed over
    loop iterations); ``tokens`` the tokens generated."""

    prompts: int = 0
    prefill_calls: int = 0
    prefill_rows: int = 0
    decode_calls: int = 0
    decode_rows: int = 0
    live_rows: int = 0
    decode_steps: int = 0
    row_steps: int = 0
    tokens: int = 0


def stable_hash(key: str) -> int:
    """A 32-bit hash of a prompt key that is the same in every process (unlike ``hash``)."""
    return zlib.crc32(key.encode("utf-8"))


def prompt_bucket(n: int) -> int:
    """Smallest bucket >= n from 16, 24, 32, 48, 64, 96, ... (at most 1.5x padding)."""
    b = _MIN_BUCKET
    while True:
        if n <= b:
            return b
        if n <= b * 3 // 2:
            return b * 3 // 2
        b *= 2


# ----------------------------------------------------------------------------- pure functions

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


def prefill(cfg: ModelConfig, params: Params, tokens: jax.Array,
            lengths: jax.Array) -> tuple[jax.Array, KVCache]:
    """Run left-padded prompts [Bp, P] (true lengths [Bp]) through the model once.

    Returns the next-token logits [Bp, V] and the prompts' cache (P slots; a prompt of n tokens
    fills slots P-n..P-1 at positions 0..n-1).
    """
    bp, p = tokens.shape
    start = p - lengths[:, None]  # first real slot of each row
    t = jnp.arange(p)[None, :]
    valid = t >= start
    positions = jnp.where(valid, t - start, 0).astype(jnp.int32)
    mask = (t[:, None, :] <= t[:, :, None]) & (t[:, None, :] >= start[:, :, None])
    cache = KVCache.zeros(cfg, bp, p)
    logits_at = jnp.full((bp, 1), p - 1, jnp.int32)
    logits, cache = forward(cfg, params, tokens, positions, mask, logits_at=logits_at,
                            cache=cache, cache_index=0)
    return logits[:, 0], cache


def decode(cfg: ModelConfig, max_new_tokens: int, num_samples: int, rows: int,
           params: Params, prompt_cache: KVCache, first_logits: jax.Array, lengths: jax.Array,
           prompt_hash: jax.Array, prompt_live: jax.Array, seed: jax.Array,
           temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, stop_ids: jax.Array,
           stop_codes: jax.Array, *, gen_sharding: Any = None) -> dict[str, jax.Array]:
    """Sample ``num_samples`` continuations of each of Np prefilled prompts on ``rows`` rows.

    prompt_cache/first_logits/lengths come from ``prefill``; prompt_hash [Np] is the 32-bit key
    hash of each prompt, prompt_live [Np] False for batch padding. Pair j = (prompt j // n,
    sample j % n). Continuous batching: the pairs still running after their first token queue
    up, each row takes the next pair the step after its sample stops, and the loop ends when the
    queue is empty and every row has stopped — so a step's cost goes to live samples, not to rows
    waiting for the longest sample of their batch. Returns, per pair, tokens [NP, max_new_tokens]
    (0 after the sample stops), logprobs, n_tokens, finish (0 length, 1 eos, 2 end-of-turn);
    ``steps`` (loop iterations) and ``row_steps`` (tokens fed through the model).
    """
    n, g_cap = num_samples, max_new_tokens
    n_pairs = lengths.shape[0] * n
    pair_prompt = jnp.arange(n_pairs, dtype=jnp.int32) // n
    pair_sample = (jnp.arange(n_pairs) % n).astype(jnp.uint32)
    base = jax.random.key(seed)
    keys = jax.vmap(lambda h, i: jax.random.fold_in(jax.random.fold_in(base, h), i))(
        jnp.take(prompt_hash, pair_prompt), pair_sample)
    live = jnp.take(prompt_live, pair_prompt)

    def stop_code(tok):
        hit = tok[:, None] == stop_ids[None, :]
        return jnp.max(jnp.where(hit, stop_codes[None, :], _LENGTH), axis=-1)

    tok0, lp0 = sample_step(first_logits, keys, 0, temperature, top_k, top_p, rows=pair_prompt)
    out = jnp.zeros((n_pairs, g_cap), jnp.int32).at[:, 0].set(tok0)
    lps = jnp.zeros((n_pairs, g_cap), jnp.float32).at[:, 0].set(lp0)
    code0 = stop_code(tok0)
    finish = jnp.where(live, code0, _LENGTH)
    n_tok = jnp.where(live, 1, 0).astype(jnp.int32)
    result = dict(tokens=out, logprobs=lps, n_tokens=n_tok, finish=finish,
                  steps=jnp.int32(0), row_steps=jnp.int32(0))
    if g_cap == 1:  # no loop: nothing below is traced
        return result

    # the queue: pairs that need more tokens, in pair order
    need = live & (code0 == _LENGTH)
    queue = jnp.argsort(~need, stable=True).astype(jnp.int32)
    n_queue = jnp.sum(need).astype(jnp.int32)
    pk, pv = prompt_part(prompt_cache)
    ring = g_cap - 1  # a sample feeds at most max_new_tokens - 1 tokens
    gk, gv = empty_generated(cfg, rows, ring)
    if gen_sharding is not None:
        gk = jax.lax.with_sharding_constraint(gk, gen_sharding)
        gv = jax.lax.with_sharding_constraint(gv, gen_sharding)

    def refill(row_pair, row_t, nxt):
        free = row_pair < 0
        cand = nxt + jnp.cumsum(free) - 1
        ok = free & (cand < n_queue)
        row_pair = jnp.where(ok, jnp.take(queue, jnp.minimum(cand, n_pairs - 1)), row_pair)
        return row_pair, jnp.where(ok, 1, row_t), nxt + jnp.sum(ok).astype(jnp.int32)

    def body(c: _Loop) -> _Loop:
        active = c.row_pair >= 0
        pair = jnp.maximum(c.row_pair, 0)
        t = c.row_t  # tokens this sample has; the last one is fed now and its key/value stored
        # generated keys live in a ring of g_cap - 1 slots that every row writes at the same
        # slot each step (one dynamic-update-slice instead of a per-row scatter); a row's
        # sample owns the slots written in its last t - 1 steps
        slot = c.steps % ring
        age = (c.steps - jnp.arange(ring)) % ring  # steps since each slot was written
        gen_mask = (age[None, :] >= 1) & (age[None, :] <= (t - 1)[:, None])
        prompt = jnp.take(pair_prompt, pair)
        q_pos = jnp.take(lengths, prompt) + t - 1
        logits, k_new, v_new = decode_step(
            cfg, params, c.tokens[pair, t - 1], prompt, q_pos, gen_mask,
            q_pos[:, None] - age[None, :], SplitCache(pk, pv, lengths, c.gen_k, c.gen_v))
        tok, lp = sample_step(logits, jnp.take(keys, pair, axis=0), t, temperature, top_k,
                              top_p)
        code = stop_code(tok)
        dst = jnp.where(active, pair, n_pairs)  # out of range: dropped
        stopped = active & ((code != _LENGTH) | (t + 1 >= g_cap))
        row_pair, row_t, nxt = refill(jnp.where(stopped, -1, c.row_pair), t + 1, c.next_pair)
        return _Loop(
            steps=c.steps + 1, row_steps=c.row_steps + jnp.sum(active).astype(jnp.int32),
            row_pair=row_pair, row_t=row_t, next_pair=nxt,
            gen_k=jax.lax.dynamic_update_slice_in_dim(c.gen_k, k_new[..., None], slot, axis=4),
            gen_v=jax.lax.dynamic_update_slice_in_dim(c.gen_v, v_new[:, :, :, None, :], slot,
                                                      axis=3),
            tokens=c.tokens.at[dst, t].set(tok, mode="drop"),
            logprobs=c.logprobs.at[dst, t].set(lp, mode="drop"),
            n_tokens=c.n_tokens.at[dst].set(t + 1, mode="drop"),
            finish=c.finish.at[dst].set(code, mode="drop"))

    row_pair, row_t, nxt = refill(jnp.full((rows,), -1, jnp.int32),
                                  jnp.ones((rows,), jnp.int32), jnp.int32(0))
    state = _Loop(jnp.int32(0), jnp.int32(0), row_pair, row_t, nxt, gk, gv, out, lps, n_tok,
                  finish)
    # Phases: once the queue is empty and few rows are still busy (the long samples), the busy
    # rows move to a loop with half the rows, so the tail does not pay for idle rows.
    phases = _row_phases(rows)
    for i, r in enumerate(phases):
        if i:
            keep = jnp.argsort(state.row_pair < 0, stable=True)[:r]  # busy rows first
            state = state._replace(row_pair=state.row_pair[keep], row_t=state.row_t[keep],
                                   gen_k=state.gen_k[:, keep], gen_v=state.gen_v[:, keep])
        smaller = phases[i + 1] if i + 1 < len(phases) else 0

        def cond(c: _Loop, smaller: int = smaller) -> jax.Array:
            busy = jnp.sum(c.row_pair >= 0)
            return (busy > 0) & ((c.next_pair < n_queue) | (busy > smaller))

        state = jax.lax.while_loop(cond, body, state)
    return dict(tokens=state.tokens, logprobs=state.logprobs, n_tokens=state.n_tokens,
                finish=state.finish, steps=state.steps, row_steps=state.row_steps)


class _Loop(NamedTuple):
    """State of the decode loop: per row the pair it serves (-1 idle) and that sample's token
    count; the queue position; the rows' generated keys/values; per pair the outputs."""

    steps: jax.Array
    row_steps: jax.Array
    row_pair: jax.Array  # [R]
    row_t: jax.Array  # [R]
    next_pair: jax.Array  # next queue entry to hand out
    gen_k: jax.Array
    gen_v: jax.Array
    tokens: jax.Array  # [NP, max_new_tokens]
    logprobs: jax.Array
    n_tokens: jax.Array  # [NP]
    finish: jax.Array  # [NP]


@functools.lru_cache(maxsize=None)
def _cached_prefill(cfg: ModelConfig) -> Callable:
    return make_prefill_fn(cfg)


@functools.lru_cache(maxsize=None)
def _cached_decode(cfg: ModelConfig, max_new_tokens: int, num_samples: int, rows: int) -> Callable:
    return make_decode_fn(cfg, max_new_tokens, num_samples, rows)


def make_prefill_fn(cfg: ModelConfig, *, in_shardings: Any = None,
                    out_shardings: Any = None) -> Callable:
    """jit of ``(params, tokens [Bp, P], lengths [Bp]) -> (first_logits, KVCache)``."""
    return jit_with_shardings(functools.partial(prefill, cfg), in_shardings, out_shardings)


def make_decode_fn(cfg: ModelConfig, max_new_tokens: int, num_samples: int, rows: int, *,
                   in_shardings: Any = None, out_shardings: Any = None,
                   gen_sharding: Any = None) -> Callable:
    """jit of ``decode`` with cfg, max_new_tokens, num_samples and rows bound."""
    fn = functools.partial(decode, cfg, max_new_tokens, num_samples, rows,
                           gen_sharding=gen_sharding)
    return jit_with_shardings(fn, in_shardings, out_shardings)


def _row_phases(rows: int, shrink: int = 2, smallest: int = 4) -> list[int]:
    """Row counts of the decode loop's phases: 64 -> [64, 32, 16, 8, 4]."""
    out = [rows]
    while out[-1] // shrink >= smallest:
        out.append(out[-1] // shrink)
    return out


def _power_of_two_parts(n: int) -> list[int]:
    """``n`` as a sum of distinct powers of two, largest first (13 -> [8, 4, 1])."""
    return [1 << b for b in range(n.bit_length() - 1, -1, -1) if n >> b & 1]


# ----------------------------------------------------------------------------- the sampler

class Sampler:
    """Samples continuations of already-rendered prompts (chat-template text).

    ``stop_token_ids``: extra token ids that end a sample (reported as "end_of_turn").
    ``end_of_turn``: strings whose single-token ids end a sample; by default the ChatML / Llama-3 /
    Gemma / Mistral end-of-turn markers that the tokenizer knows as one token. The tokenizer's
    ``eos_token_id`` always stops (reported as "eos" unless it is also an end-of-turn token).
    ``max_batch``: rows of the decode loop (samples in flight at once; each holds keys/values
    for its own new tokens only). ``max_prompts``: prompts per decode call (their keys/values
    are held once, shared by their samples); more prompts per call keep the rows busy longer
    before the queue drains.
    """

    DEFAULT_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")

    def __init__(self, cfg: ModelConfig, params: Params, tokenizer: Any, *,
                 stop_token_ids: Sequence[int] | None = None,
                 end_of_turn: Sequence[str] | None = None, max_batch: int = 64,
                 max_prompts: int = 32, mesh: Any = None, add_special_tokens: bool = False):
        if max_batch < 1:
            raise InputError(f"max_batch: must be >= 1, got {max_batch}")
        if max_prompts < 1:
            raise InputError(f"max_prompts: must be >= 1, got {max_prompts}")
        self.cfg, self.params, self.tokenizer = cfg, params, tokenizer
        self.max_batch = max_batch
        self.max_prompts = 1 << (max_prompts.bit_length() - 1)  # a power of two
        self.mesh = mesh
        if mesh is not None:
            from valueprobe_jax.parallel import sharding as sh  # noqa: PLC0415

            self.params = sh.shard_params(params, mesh, cfg)
        self.add_special_tokens = add_special_tokens
        codes: dict[int, int] = {}
        eos = getattr(tokenizer, "eos_token_id", None)
        for e in (eos if isinstance(eos, (list, tuple)) else [eos]):
            if e is not None:
                codes[int(e)] = _EOS
        for s in (self.DEFAULT_END_OF_TURN if end_of_turn is None else end_of_turn):
            ids = tokenizer.encode(s, add_special_tokens=False)
            if len(ids) == 1:
                codes[ids[0]] = _END_OF_TURN
            elif end_of_turn is not None:
                raise InputError(f"end_of_turn {s!r}: is not a single token of this tokenizer")
        for t in stop_token_ids or ():
            codes[int(t)] = _END_OF_TURN
        self.stop_codes = codes
        # (ids, codes) padded to a multiple of 8 entries so their shape rarely changes the jit key
        width = 8 * max(1, -(-len(codes) // 8))
        ids_arr = np.full((width,), -1, np.int32)
        codes_arr = np.full((width,), _LENGTH, np.int32)
        ids_arr[:len(codes)], codes_arr[:len(codes)] = list(codes), list(codes.values())
        self._stop_table = (ids_arr, codes_arr)
        self._fns: dict[tuple[Any, ...], Callable] = {}
        self.last_stats = SamplerStats()

    # -- compiled functions

    def _prefill_fn(self, prompts: int, p: int) -> Callable:
        if self.mesh is None:
            return _cached_prefill(self.cfg)
        key = ("prefill", prompts, p)
        if key not in self._fns:
            from valueprobe_jax.parallel import sharding as sh  # noqa: PLC0415 (only needed with a mesh)

            self._fns[key] = make_prefill_fn(
                self.cfg, in_shardings=(sh.param_shardings(self.cfg, self.mesh),
                                        self._batch(prompts, p), self._batch(prompts)),
                out_shardings=(self._vocab_rows(prompts), self._prompt_cache(prompts, p)))
        return self._fns[key]

    def _decode_fn(self, max_new_tokens: int, num_samples: int, rows: int, prompts: int,
                   p: int) -> Callable:
        if self.mesh is None:
            return _cached_decode(self.cfg, max_new_tokens, num_samples, rows)
        key = ("decode", max_new_tokens, num_samples, rows, prompts, p)
        if key not in self._fns:
            self._fns[key] = self._sharded_decode(*key[1:])
        return self._fns[key]

    def _batch(self, *shape: int) -> Any:
        from valueprobe_jax.parallel import sharding as sh  # noqa: PLC0415

        return sh.batch_sharding(self.mesh, shape)

    def _vocab_rows(self, b: int) -> Any:
        from valueprobe_jax.parallel import sharding as sh  # noqa: PLC0415

        return jax.sharding.NamedSharding(self.mesh, sh.logical_to_pspec(
            ("batch", "vocab"), (b, self.cfg.vocab_size), self.mesh)[0])

    def _prompt_cache(self, prompts: int, p: int) -> Any:
        from valueprobe_jax.parallel import sharding as sh  # noqa: PLC0415

        return sh.cache_shardings(self.cfg, self.mesh, prompts, p)

    def _sharded_decode(self, max_new_tokens: int, num_samples: int, rows: int, prompts: int,
                        p: int) -> Callable:
        """The decode loop pinned to ``self.mesh``: parameters by their logical axes, prompts,
        pairs and the rows' generated keys/values over the batch axes (data, fsdp), kv heads
        over tensor."""
        from valueprobe_jax.parallel import sharding as sh  # noqa: PLC0415

        mesh, cfg = self.mesh, self.cfg
        rep = sh.replicated(mesh)
        gen_shape = (cfg.num_layers, rows, cfg.num_kv_heads, max(1, max_new_tokens - 1),
                     cfg.head_dim)
        gen = jax.sharding.NamedSharding(mesh, sh.logical_to_pspec(
            ("layers", "cache_batch", "kv_heads", "cache_sequence", "head_dim"), gen_shape,
            mesh)[0])
        pairs = prompts * num_samples
        per_pair, tokens = self._batch(pairs), self._batch(pairs, max_new_tokens)
        return make_decode_fn(
            cfg, max_new_tokens, num_samples, rows,
            in_shardings=(sh.param_shardings(cfg, mesh), self._prompt_cache(prompts, p),
                          self._vocab_rows(prompts), self._batch(prompts), self._batch(prompts),
                          self._batch(prompts), rep, rep, rep, rep, rep, rep),
            out_shardings=dict(tokens=tokens, logprobs=tokens, n_tokens=per_pair,
                               finish=per_pair, steps=rep, row_steps=rep),
            gen_sharding=gen)

    # -- public API

    def generate(self, prompts: Sequence[str], keys: Sequence[str],
                 sp: SamplingParams = SamplingParams()) -> list[list[Generation]]:
        """``sp.num_samples`` generations for every prompt, in prompt order.

        ``keys`` name the prompts stably (e.g. "style/variant/country/qid"); sample i of a prompt
        depends only on (sp.seed, its key, i) and the model, never on batching.
        """
        sp.validate()
        if len(keys) != len(prompts):
            raise InputError(f"keys: need one key per prompt ({len(prompts)}), got {len(keys)}")
        token_lists = [self.tokenizer.encode(p, add_special_tokens=self.add_special_tokens)
                       for p in prompts]
        for i, t in enumerate(token_lists):
            if not t:
                raise InputError(f"prompt {i} ({keys[i]!r}): is empty after tokenization")
            if len(t) + sp.max_new_tokens > self.cfg.max_position_embeddings:
                raise InputError(f"prompt {keys[i]!r}: {len(t)} tokens + {sp.max_new_tokens} new "
                                 f"exceed the model's {self.cfg.max_position_embeddings} positions")
        results: list[list[Generation | None]] = [[None] * sp.num_samples for _ in prompts]
        self.last_stats = SamplerStats(prompts=len(prompts))
        order = sorted(range(len(prompts)), key=lambda i: len(token_lists[i]))
        for c in range(0, len(order), self.max_prompts):
            self._run_group(order[c:c + self.max_prompts], token_lists, keys, sp, results)
        return results  # type: ignore[return-value]

    def _run_group(self, group: list[int], token_lists: list[list[int]],
                   keys: Sequence[str], sp: SamplingParams,
                   results: list[list[Generation | None]]) -> None:
        """One decode call for up to ``max_prompts`` prompts (shortest first), all their samples
        sharing the rows of one continuous-batching loop."""
        n = sp.num_samples
        scalars = (np.uint32(sp.seed), np.float32(sp.temperature), np.int32(sp.top_k),
                   np.float32(sp.top_p))
        slots = 1 << (len(group) - 1).bit_length()  # prompts in the decode call
        rows = min(self.max_batch, slots * n)
        p = prompt_bucket(max(len(token_lists[i]) for i in group))
        lens = np.zeros((slots,), np.int32)
        hashes = np.zeros((slots,), np.uint32)
        live = np.zeros((slots,), bool)
        for j, i in enumerate(group):
            lens[j], hashes[j], live[j] = len(token_lists[i]), stable_hash(keys[i]), True
        first_logits, cache = self._prefill_group([token_lists[i] for i in group], slots, p)
        out = self._decode_fn(sp.max_new_tokens, n, rows, slots, p)(
            self.params, cache, first_logits, lens, hashes, live, *scalars, *self._stop_table)
        out = jax.device_get(out)
        st = self.last_stats
        st.decode_calls += 1
        st.decode_rows += rows
        st.live_rows += len(group) * n
        st.decode_steps += int(out["steps"]) + 1
        st.row_steps += int(out["row_steps"])
        st.tokens += int(out["n_tokens"].sum())
        for j, i in enumerate(group):
            for s_ in range(n):
                results[i][s_] = self._to_generation(out, j * n + s_)

    def _prefill_group(self, group: list[list[int]], slots: int,
                       p: int) -> tuple[Any, KVCache]:
        """Prefill the prompts of one decode call, by length bucket in power-of-two batches (no
        padding prompts are run, no prompt is padded beyond its own bucket), then lay their
        caches out left-padded to ``p`` slots as ``slots`` prompt entries (the rest zero)."""
        st = self.last_stats
        logits, ks, vs = [], [], []
        start = 0
        while start < len(group):
            b = prompt_bucket(len(group[start]))
            end = start
            while end < len(group) and prompt_bucket(len(group[end])) == b:
                end += 1
            for size in _power_of_two_parts(end - start):
                toks = np.zeros((size, b), np.int32)
                lens = np.zeros((size,), np.int32)
                for j, t in enumerate(group[start:start + size]):
                    toks[j, b - len(t):] = t
                    lens[j] = len(t)
                lg, cache = self._prefill_fn(size, b)(self.params, toks, lens)
                widen = ((0, 0), (0, 0), (p - b, 0), (0, 0), (0, 0))
                logits.append(lg)
                ks.append(jnp.pad(cache.k, widen) if b < p else cache.k)
                vs.append(jnp.pad(cache.v, widen) if b < p else cache.v)
                start += size
                st.prefill_calls += 1
                st.prefill_rows += size
        if slots > len(group):
            pad = slots - len(group)
            logits.append(jnp.zeros((pad,) + logits[0].shape[1:], logits[0].dtype))
            ks.append(jnp.zeros((ks[0].shape[0], pad) + ks[0].shape[2:], ks[0].dtype))
            vs.append(jnp.zeros((vs[0].shape[0], pad) + vs[0].shape[2:], vs[0].dtype))
        pos = jnp.zeros((slots, p), jnp.int32)  # unused by decode: positions follow lengths
        if len(logits) == 1:
            first, cache = logits[0], KVCache(ks[0], vs[0], pos)
        else:
            first = jnp.concatenate(logits, axis=0)
            cache = KVCache(jnp.concatenate(ks, axis=1), jnp.concatenate(vs, axis=1), pos)
        if self.mesh is not None:
            first = jax.device_put(first, self._vocab_rows(slots))
            cache = jax.device_put(cache, self._prompt_cache(slots, p))
        return first, cache

    def _to_generation(self, out: dict[str, np.ndarray], row: int) -> Generation:
        m = int(out["n_tokens"][row])
        ids = tuple(int(t) for t in out["tokens"][row, :m])
        code = int(out["finish"][row])
        text_ids = ids[:-1] if code != _LENGTH else ids
        text = self.tokenizer.decode(list(text_ids), skip_special_tokens=True)
        lps = tuple(float(x) for x in out["logprobs"][row, :m])
        return Generation(text=text, token_ids=ids, finish_reason=_FINISH[code], logprobs=lps)
