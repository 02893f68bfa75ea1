"""The jitted decode loop: prefill prompts into a KV cache, then sample every (prompt, sample)
pair to its stop on a fixed number of rows with continuous batching.

- Prefill: left-padded prompts [Bp, P] run through the model once (slots ``P-n .. P-1`` hold a
  prompt of n tokens at positions 0..n-1).
- Decode, in named steps: ``init`` draws every pair's first token from the prefill logits and
  fills the rows from the queue of pairs that need more; each ``step`` feeds every busy row's
  last token, samples the next, and ``refill``\\ s the rows whose sample stopped (EOS, an
  end-of-turn token, or ``max_new_tokens``) with the next queued pair, so rows do not idle
  waiting for the longest sample of a batch; once the queue is empty and few rows are busy,
  ``shrink`` moves the busy rows to a loop with half as many rows (down to 4), so a few long
  samples do not pay for idle rows either.

The prompts' keys/values are held once (``SplitCache``: the samples of a prompt read the same
entry) and each row holds only its own new tokens. Temperature, top-k and top-p are traced
scalars. The key scheme is ``sampling.py``'s.

``processing`` is static: ``"ours"`` (``sampling.sample_step``) and ``"paper"``
(``sampling.paper_sample_step``: transformers 4.45's repetition penalty, temperature, top-k,
top-p) are separate compiled programs, and the "ours" program is the one it always was. The
paper program takes the left-padded prompt ids (``PaperInputs``) and builds each prompt's
seen-token mask [Np, V] once; a row's mask is its prompt's OR'd with the tokens its sample has
generated so far (read from the pair's output row), so no [pairs, V] state is carried.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from valueprobe_jax.engine.processors import seen_mask_from_ids
from valueprobe_jax.engine.sampling import PaperSettings, paper_sample_step, sample_step
from valueprobe_jax.engine.traces import TraceCounter, Traced, counted
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.decode import SplitCache, decode_step, empty_generated, prompt_part
from valueprobe_jax.models.layers import KVCache, Params, forward
from valueprobe_jax.parallel.sharding import jit_with_shardings

# finish codes used inside the jitted loop
LENGTH, EOS, END_OF_TURN = 0, 1, 2
FINISH_REASONS = {LENGTH: "length", EOS: "eos", END_OF_TURN: "end_of_turn"}


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


class PaperInputs(NamedTuple):
    """What the ``"paper"`` decode program reads besides ``decode``'s other arguments: the
    prompts' ids [Np, P] left-padded as for ``prefill`` (their seen-token masks) and the
    ``PaperSettings`` scalars."""

    prompt_ids: jax.Array
    settings: PaperSettings


class _Fixed(NamedTuple):
    """What every step reads and none changes: the model, the pairs' prompts and keys, the
    prompts' cache, the sampling scalars, the stop table and the queue of pairs."""

    cfg: ModelConfig
    params: Params
    g_cap: int  # max_new_tokens
    n_pairs: int
    pair_prompt: jax.Array  # [NP] prompt of each pair
    keys: jax.Array  # [NP] each pair's base key
    lengths: jax.Array  # [Np] prompt lengths
    prompt_k: jax.Array
    prompt_v: jax.Array
    temperature: jax.Array
    top_k: jax.Array
    top_p: jax.Array
    stop_ids: jax.Array
    stop_codes: jax.Array
    queue: jax.Array  # pairs that need more than one token, in pair order
    n_queue: jax.Array
    processing: str = "ours"  # static: which program
    prompt_seen: jax.Array | None = None  # "paper": [Np, V] ids present in each prompt
    paper: PaperSettings | None = None  # "paper": penalty, 1 - top_p

    @property
    def ring(self) -> int:
        return self.g_cap - 1  # a sample feeds at most max_new_tokens - 1 tokens


def pair_keys(seed: jax.Array, prompt_hash: jax.Array, pair_prompt: jax.Array,
              num_samples: int) -> jax.Array:
    """The key of every (prompt, sample) pair: ``fold_in(fold_in(key(seed), hash), sample)``."""
    pair_sample = (jnp.arange(pair_prompt.shape[0]) % num_samples).astype(jnp.uint32)
    base = jax.random.key(seed)
    return jax.vmap(lambda h, i: jax.random.fold_in(jax.random.fold_in(base, h), i))(
        jnp.take(prompt_hash, pair_prompt), pair_sample)


def _stop_code(tok: jax.Array, stop_ids: jax.Array, stop_codes: jax.Array) -> jax.Array:
    hit = tok[:, None] == stop_ids[None, :]
    return jnp.max(jnp.where(hit, stop_codes[None, :], LENGTH), axis=-1)


def refill(fx: _Fixed, row_pair: jax.Array, row_t: jax.Array,
           nxt: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Free rows (pair -1) take the next queued pairs, in row order, starting at token 1."""
    free = row_pair < 0
    cand = nxt + jnp.cumsum(free) - 1
    ok = free & (cand < fx.n_queue)
    row_pair = jnp.where(ok, jnp.take(fx.queue, jnp.minimum(cand, fx.n_pairs - 1)), row_pair)
    return row_pair, jnp.where(ok, 1, row_t), nxt + jnp.sum(ok).astype(jnp.int32)


def init(fx: _Fixed, rows: int, outputs: tuple[jax.Array, ...], gen_sharding: Any) -> _Loop:
    """The loop's first state: empty generated keys/values for ``rows`` rows, filled from the
    queue; ``outputs`` (tokens, logprobs, n_tokens, finish) hold every pair's first token."""
    gk, gv = empty_generated(fx.cfg, rows, fx.ring)
    if gen_sharding is not None:
        gk = jax.lax.with_sharding_constraint(gk, gen_sharding)
        gv = jax.lax.with_sharding_constraint(gv, gen_sharding)
    row_pair, row_t, nxt = refill(fx, jnp.full((rows,), -1, jnp.int32),
                                  jnp.ones((rows,), jnp.int32), jnp.int32(0))
    return _Loop(jnp.int32(0), jnp.int32(0), row_pair, row_t, nxt, gk, gv, *outputs)


def _row_seen(fx: _Fixed, prompt: jax.Array, generated: jax.Array, t: jax.Array) -> jax.Array:
    """[R, V] ids present in each row's prompt or among the first ``t`` tokens of its sample
    (``generated`` [R, max_new_tokens], the pair's output row)."""
    valid = jnp.arange(generated.shape[1])[None, :] < t[:, None]
    return (jnp.take(fx.prompt_seen, prompt, axis=0)
            | seen_mask_from_ids(generated, fx.prompt_seen.shape[1], valid))


def prompt_seen_mask(prompt_ids: jax.Array, lengths: jax.Array, vocab: int) -> jax.Array:
    """[Np, V] ids present in each left-padded prompt (the last ``lengths`` slots of a row)."""
    p = prompt_ids.shape[1]
    valid = jnp.arange(p)[None, :] >= p - lengths[:, None]
    return seen_mask_from_ids(prompt_ids, vocab, valid)


def step(fx: _Fixed, c: _Loop) -> _Loop:
    """One token for every busy row: feed its last token, sample the next, store the outputs,
    then free the rows whose sample stopped and refill them."""
    active = c.row_pair >= 0
    pair = jnp.maximum(c.row_pair, 0)
    t = c.row_t  # tokens this sample has; the last one is fed now and its key/value stored
    # generated keys live in a ring of g_cap - 1 slots that every row writes at the same
    # slot each step (one dynamic-update-slice instead of a per-row scatter); a row's
    # sample owns the slots written in its last t - 1 steps
    ring = fx.ring
    slot = c.steps % ring
    age = (c.steps - jnp.arange(ring)) % ring  # steps since each slot was written
    gen_mask = (age[None, :] >= 1) & (age[None, :] <= (t - 1)[:, None])
    prompt = jnp.take(fx.pair_prompt, pair)
    q_pos = jnp.take(fx.lengths, prompt) + t - 1
    logits, k_new, v_new = decode_step(
        fx.cfg, fx.params, c.tokens[pair, t - 1], prompt, q_pos, gen_mask,
        q_pos[:, None] - age[None, :],
        SplitCache(fx.prompt_k, fx.prompt_v, fx.lengths, c.gen_k, c.gen_v))
    if fx.processing == "paper":
        seen = _row_seen(fx, prompt, c.tokens[pair], t)
        tok, lp = paper_sample_step(logits, seen, jnp.take(fx.keys, pair, axis=0), t,
                                    fx.temperature, fx.top_k, fx.paper)
    else:
        tok, lp = sample_step(logits, jnp.take(fx.keys, pair, axis=0), t, fx.temperature,
                              fx.top_k, fx.top_p)
    code = _stop_code(tok, fx.stop_ids, fx.stop_codes)
    dst = jnp.where(active, pair, fx.n_pairs)  # out of range: dropped
    stopped = active & ((code != LENGTH) | (t + 1 >= fx.g_cap))
    row_pair, row_t, nxt = refill(fx, jnp.where(stopped, -1, c.row_pair), t + 1, c.next_pair)
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


def shrink(state: _Loop, rows: int) -> _Loop:
    """Keep ``rows`` rows, the busy ones first (their generated keys/values move with them)."""
    keep = jnp.argsort(state.row_pair < 0, stable=True)[:rows]  # busy rows first
    return state._replace(row_pair=state.row_pair[keep], row_t=state.row_t[keep],
                          gen_k=state.gen_k[:, keep], gen_v=state.gen_v[:, keep])


def run_phase(fx: _Fixed, state: _Loop, smaller: int) -> _Loop:
    """``step`` until no row is busy, or the queue is empty and at most ``smaller`` rows are busy
    (then the next phase runs them on ``smaller`` rows)."""

    def cond(c: _Loop) -> jax.Array:
        busy = jnp.sum(c.row_pair >= 0)
        return (busy > 0) & ((c.next_pair < fx.n_queue) | (busy > smaller))

    return jax.lax.while_loop(cond, functools.partial(step, fx), state)


def row_phases(rows: int, shrink_by: int = 2, smallest: int = 4) -> list[int]:
    """Row counts of the decode loop's phases: 64 -> [64, 32, 16, 8, 4]."""
    out = [rows]
    while out[-1] // shrink_by >= smallest:
        out.append(out[-1] // shrink_by)
    return out


def _first(cfg: ModelConfig, max_new_tokens: int, num_samples: int, params: Params,
           prompt_cache: KVCache, first_logits: jax.Array, lengths: jax.Array,
           prompt_hash: jax.Array, prompt_live: jax.Array, seed: jax.Array,
           temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, stop_ids: jax.Array,
           stop_codes: jax.Array, paper: PaperInputs | None, processing: str
           ) -> tuple[_Fixed, tuple[jax.Array, ...]]:
    """``decode``'s start: every pair's first token from the prefill logits, the queue of pairs
    that need more, and the loop's fixed inputs; returns (fixed, (tokens, logprobs, n_tokens,
    finish))."""
    n, g_cap = num_samples, max_new_tokens
    n_pairs = lengths.shape[0] * n
    pair_prompt = jnp.arange(n_pairs, dtype=jnp.int32) // n
    keys = pair_keys(seed, prompt_hash, pair_prompt, n)
    live = jnp.take(prompt_live, pair_prompt)

    # the first token of every pair, from the prefill logits
    prompt_seen = settings = None
    if processing == "paper":
        if paper is None:
            raise ValueError("decode: processing='paper' needs PaperInputs")
        prompt_seen = prompt_seen_mask(paper.prompt_ids, lengths, first_logits.shape[-1])
        settings = paper.settings
        tok0, lp0 = paper_sample_step(first_logits, prompt_seen, keys, 0, temperature, top_k,
                                      settings, rows=pair_prompt)
    elif processing == "ours":
        tok0, lp0 = sample_step(first_logits, keys, 0, temperature, top_k, top_p,
                                rows=pair_prompt)
    else:
        raise ValueError(f"decode: unknown processing {processing!r}")
    out = jnp.zeros((n_pairs, g_cap), jnp.int32).at[:, 0].set(tok0)
    lps = jnp.zeros((n_pairs, g_cap), jnp.float32).at[:, 0].set(lp0)
    code0 = _stop_code(tok0, stop_ids, stop_codes)
    finish = jnp.where(live, code0, LENGTH)
    n_tok = jnp.where(live, 1, 0).astype(jnp.int32)
    need = live & (code0 == LENGTH)
    queue = jnp.argsort(~need, stable=True).astype(jnp.int32)
    n_queue = jnp.sum(need).astype(jnp.int32)
    pk, pv = prompt_part(prompt_cache)
    fx = _Fixed(cfg, params, g_cap, n_pairs, pair_prompt, keys, lengths, pk, pv, temperature,
                top_k, top_p, stop_ids, stop_codes, queue, n_queue, processing, prompt_seen,
                settings)
    return fx, (out, lps, n_tok, finish)


def _outputs(state: _Loop) -> dict[str, jax.Array]:
    return dict(tokens=state.tokens, logprobs=state.logprobs, n_tokens=state.n_tokens,
                finish=state.finish, steps=state.steps, row_steps=state.row_steps)


def decode(cfg: ModelConfig, max_new_tokens: int, num_samples: int, rows: int,
           params: Params, prompt_cache: KVCache, first_logits: jax.Array, lengths: jax.Array,
           prompt_hash: jax.Array, prompt_live: jax.Array, seed: jax.Array,
           temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, stop_ids: jax.Array,
           stop_codes: jax.Array, paper: PaperInputs | None = None, *, gen_sharding: Any = None,
           processing: str = "ours") -> dict[str, jax.Array]:
    """Sample ``num_samples`` continuations of each of Np prefilled prompts on ``rows`` rows.

    prompt_cache/first_logits/lengths come from ``prefill``; prompt_hash [Np] is the 32-bit key
    hash of each prompt, prompt_live [Np] False for batch padding. Pair j = (prompt j // n,
    sample j % n). Returns, per pair, tokens [NP, max_new_tokens] (0 after the sample stops),
    logprobs, n_tokens, finish (0 length, 1 eos, 2 end-of-turn); ``steps`` (loop iterations)
    and ``row_steps`` (tokens fed through the model).

    ``processing`` (static) "paper" needs ``paper`` (``PaperInputs``) and samples with
    transformers' processors (``sampling.paper_sample_step``; ``top_p`` is then unused, the
    threshold comes from ``paper.settings``); every pair's first token is drawn from its prompt's
    processed logits (the prompt's seen mask only), the later ones with the sample's own tokens
    marked too.
    """
    fx, outputs = _first(cfg, max_new_tokens, num_samples, params, prompt_cache, first_logits,
                         lengths, prompt_hash, prompt_live, seed, temperature, top_k, top_p,
                         stop_ids, stop_codes, paper, processing)
    if max_new_tokens == 1:  # no loop: nothing below is traced
        out, lps, n_tok, finish = outputs
        return dict(tokens=out, logprobs=lps, n_tokens=n_tok, finish=finish,
                    steps=jnp.int32(0), row_steps=jnp.int32(0))
    state = init(fx, rows, outputs, gen_sharding)
    phases = row_phases(rows)
    for i, r in enumerate(phases):
        if i:
            state = shrink(state, r)
        state = run_phase(fx, state, phases[i + 1] if i + 1 < len(phases) else 0)
    return _outputs(state)


def decode_steps(cfg: ModelConfig, max_new_tokens: int, num_samples: int, rows: int,
                 steps: int, params: Params, *args: Any, gen_sharding: Any = None,
                 processing: str = "ours") -> dict[str, jax.Array]:
    """``decode``'s start and then exactly ``steps`` loop steps on ``rows`` rows, unrolled (no
    while loop, no shrinking): XLA's cost analysis counts a while body once, so the cost of one
    step is that of ``steps=2`` less that of ``steps=1`` (``bench.compile_plan``). Same
    arguments as ``decode`` after ``params``."""
    paper = args[11] if len(args) > 11 else None
    fx, outputs = _first(cfg, max_new_tokens, num_samples, params, *args[:11], paper, processing)
    state = init(fx, rows, outputs, gen_sharding)
    for _ in range(steps):
        state = step(fx, state)
    return _outputs(state)


def make_prefill_fn(cfg: ModelConfig, *, in_shardings: Any = None, out_shardings: Any = None,
                    traces: TraceCounter | None = None) -> Callable:
    """jit of ``(params, tokens [Bp, P], lengths [Bp]) -> (first_logits, KVCache)``."""
    fn = counted(functools.partial(prefill, cfg), "prefill", traces)
    return jit_with_shardings(fn, in_shardings, out_shardings)


def make_decode_fn(cfg: ModelConfig, max_new_tokens: int, num_samples: int, rows: int, *,
                   in_shardings: Any = None, out_shardings: Any = None,
                   gen_sharding: Any = None, traces: TraceCounter | None = None,
                   processing: str = "ours", steps: int | None = None) -> Callable:
    """jit of ``decode`` with cfg, max_new_tokens, num_samples, rows and processing bound
    ("paper": one more argument, ``PaperInputs``, after stop_codes); with ``steps``, of
    ``decode_steps`` instead (for counting one step's cost)."""
    fn = (functools.partial(decode, cfg, max_new_tokens, num_samples, rows) if steps is None
          else functools.partial(decode_steps, cfg, max_new_tokens, num_samples, rows, steps))
    fn = functools.partial(fn, gen_sharding=gen_sharding, processing=processing)
    return jit_with_shardings(counted(fn, "decode", traces), in_shardings, out_shardings)


@functools.lru_cache(maxsize=None)
def shared_prefill(cfg: ModelConfig) -> Traced:
    """The unsharded prefill of ``cfg``, shared by every ``Sampler`` (and its compiled shapes)."""
    traces = TraceCounter()
    return Traced(make_prefill_fn(cfg, traces=traces), traces)


@functools.lru_cache(maxsize=None)
def shared_decode(cfg: ModelConfig, max_new_tokens: int, num_samples: int, rows: int,
                  processing: str = "ours") -> Traced:
    """The unsharded decode loop of ``cfg`` for these sizes, shared by every ``Sampler``."""
    traces = TraceCounter()
    return Traced(make_decode_fn(cfg, max_new_tokens, num_samples, rows, traces=traces,
                                 processing=processing), traces)


__all__ = ["LENGTH", "EOS", "END_OF_TURN", "FINISH_REASONS", "PaperInputs", "prefill",
           "prompt_seen_mask", "pair_keys", "refill",
           "init", "step", "shrink", "run_phase", "row_phases", "decode", "decode_steps",
           "make_prefill_fn",
           "make_decode_fn", "shared_prefill", "shared_decode"]
