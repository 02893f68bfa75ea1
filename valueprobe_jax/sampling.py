"""Text generation for the *text* method: a jitted decode loop with a KV cache.

The sampler owns the decode loop and its cache; the model (``models.forward``) knows nothing
about prompts. Each prompt is prefilled once; its cache is then copied to the rows of its N
samples inside the jitted decode function, which runs a ``jax.lax.while_loop`` that stops as soon
as every row has emitted a stop token (EOS or the chat template's end-of-turn token) or reached
``max_new_tokens``.

Prompts are left-padded to a bucketed length P (slots ``P-n .. P-1`` hold a prompt of n tokens,
positions are the true positions 0..n-1, padding is masked out), so every row writes its t-th new
token at the same cache slot ``P + t`` and one scalar cache index serves the whole batch. Prompts
are grouped by bucket, and every call for one bucket has the same batch shape, so jit compiles
once per (prompt bucket, max_new_tokens, batch shape) and the padding a prompt gets never
depends on the other prompts in its batch. Temperature, top-k and top-p are traced scalars.

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
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.layers import KVCache, Params, forward
from valueprobe_jax.sharding import jit_with_shardings

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
    """What one ``generate`` call did (for benchmarks and tests): every prompt is prefilled once,
    decode calls run ``decode_steps`` loop steps in total over ``decode_rows`` rows (padding
    included), of which ``live_rows`` were real samples that produced ``tokens`` tokens."""

    prompts: int = 0
    prefill_calls: int = 0
    prefill_rows: int = 0
    decode_calls: int = 0
    decode_rows: int = 0
    live_rows: int = 0
    decode_steps: int = 0
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


def two_level_gumbel_max(key: jax.Array, logits: jax.Array, block: int = _BLOCK) -> jax.Array:
    """An exact draw from softmax(logits [V]) with Gumbel noise on ~2*sqrt(V) entries, not V.

    The vocabulary is cut into blocks of ``block`` tokens: Gumbel-max over the blocks' log-masses
    (logsumexp) picks a block with probability = its mass, then Gumbel-max inside that block picks
    a token with probability proportional to its own mass, so P(token) = p_token exactly. Random
    bits per draw fall from V to V/block + block (49152 -> 448 for SmolLM2), which matters on CPU.
    Unlike inverse-CDF sampling (a float32 cumsum over V), an argmax flips only when the two best
    perturbed scores are within rounding noise, so draws do not change with the device layout.
    """
    v = logits.shape[-1]
    nb = -(-v // block)
    x = jnp.pad(logits, (0, nb * block - v), constant_values=-jnp.inf).reshape(nb, block)
    k_block, k_token = jax.random.split(key)
    mass = jax.nn.logsumexp(x, axis=-1)  # -inf for a block of filtered / padding tokens
    b = jnp.argmax(mass + jax.random.gumbel(k_block, (nb,)))
    j = jnp.argmax(x[b] + jax.random.gumbel(k_token, (block,)))
    return (b * block + j).astype(jnp.int32)


def sample_step(logits: jax.Array, keys: jax.Array, step: jax.Array, temperature: jax.Array,
                top_k: jax.Array, top_p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One token per row from [B, V] float32 logits. Returns (tokens [B], raw logprobs [B])."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = logits / jnp.maximum(temperature, 1e-6)
    scaled = jax.lax.cond((top_k > 0) | (top_p < 1.0),
                          lambda x: filter_logits(x, top_k, top_p), lambda x: x, scaled)
    step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, step)
    sampled = jax.vmap(two_level_gumbel_max)(step_keys, scaled)
    tok = jnp.where(temperature > 0, sampled, greedy)
    return tok, jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]


def prefill(cfg: ModelConfig, max_new_tokens: int, params: Params, tokens: jax.Array,
            lengths: jax.Array) -> tuple[jax.Array, KVCache]:
    """Run left-padded prompts [Bp, P] (true lengths [Bp]) through the model once.

    Returns the next-token logits [Bp, V] and a cache of capacity P + max_new_tokens holding the
    prompt keys in slots 0..P-1.
    """
    bp, p = tokens.shape
    start = p - lengths[:, None]  # first real slot of each row
    t = jnp.arange(p)[None, :]
    valid = t >= start
    positions = jnp.where(valid, t - start, 0).astype(jnp.int32)
    s = jnp.arange(p + max_new_tokens)[None, None, :]
    mask = (s <= t[:, :, None]) & (s >= start[:, :, None])
    cache = KVCache.zeros(cfg, bp, p + max_new_tokens)
    logits_at = jnp.full((bp, 1), p - 1, jnp.int32)
    logits, cache = forward(cfg, params, tokens, positions, mask, logits_at=logits_at,
                            cache=cache, cache_index=0)
    return logits[:, 0], cache


def decode(cfg: ModelConfig, max_new_tokens: int, params: Params, prompt_cache: KVCache,
           first_logits: jax.Array, lengths: jax.Array, row_prompt: jax.Array,
           row_hash: jax.Array, row_sample: jax.Array, row_live: jax.Array, seed: jax.Array,
           temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, stop_ids: jax.Array,
           stop_codes: jax.Array) -> dict[str, jax.Array]:
    """Sample up to ``max_new_tokens`` tokens for B rows, each continuing prompt ``row_prompt``.

    prompt_cache/first_logits/lengths come from ``prefill`` (one entry per prompt); row_* are [B]
    (prompt index, 32-bit key hash, sample index, and whether the row is real or batch padding).
    Returns tokens [B, max_new_tokens] (0 after a row stops), logprobs, n_tokens [B],
    finish [B] (0 length, 1 eos, 2 end-of-turn) and steps (tokens sampled per row before the
    loop exited: below max_new_tokens when every row stopped early).
    """
    b = row_prompt.shape[0]
    s_cap = prompt_cache.k.shape[2]
    p = s_cap - max_new_tokens
    base = jax.random.key(seed)
    keys = jax.vmap(lambda h, i: jax.random.fold_in(jax.random.fold_in(base, h), i))(
        row_hash, row_sample)
    lens = jnp.take(lengths, row_prompt)

    def stop_code(tok):
        hit = tok[:, None] == stop_ids[None, :]
        return jnp.max(jnp.where(hit, stop_codes[None, :], _LENGTH), axis=-1)

    tok0, lp0 = sample_step(jnp.take(first_logits, row_prompt, axis=0), keys, jnp.uint32(0),
                            temperature, top_k, top_p)
    out = jnp.zeros((b, max_new_tokens), jnp.int32).at[:, 0].set(tok0)
    lps = jnp.zeros((b, max_new_tokens), jnp.float32).at[:, 0].set(lp0)
    code = stop_code(tok0)
    done = (~row_live) | (code != _LENGTH)
    finish = jnp.where(row_live, code, _LENGTH)
    n_tok = jnp.where(row_live, 1, 0).astype(jnp.int32)
    result = dict(tokens=out, logprobs=lps, n_tokens=n_tok, finish=finish, steps=jnp.int32(1))
    if max_new_tokens == 1:  # no loop: the cache copy below is never traced
        return result

    cache = KVCache(jnp.take(prompt_cache.k, row_prompt, axis=1),
                    jnp.take(prompt_cache.v, row_prompt, axis=1),
                    jnp.take(prompt_cache.pos, row_prompt, axis=0))
    slots = jnp.arange(s_cap)[None, None, :]
    first_slot = (p - lens)[:, None, None]

    def cond(c):
        step, done = c[0], c[-1]
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(c):
        step, last, cache, out, lps, n_tok, finish, done = c
        slot = p + step - 1  # where the previous token is written
        positions = (lens + step - 1)[:, None].astype(jnp.int32)
        mask = (slots >= first_slot) & (slots <= slot)
        logits, cache = forward(cfg, params, last[:, None], positions, mask, cache=cache,
                                cache_index=slot)
        tok, lp = sample_step(logits[:, 0], keys, step.astype(jnp.uint32), temperature,
                              top_k, top_p)
        tok = jnp.where(done, 0, tok)
        out = out.at[:, step].set(tok)
        lps = lps.at[:, step].set(jnp.where(done, 0.0, lp))
        code = stop_code(tok)
        finish = jnp.where(done, finish, code)
        n_tok = jnp.where(done, n_tok, step + 1)
        done = done | (code != _LENGTH)
        return step + 1, tok, cache, out, lps, n_tok, finish, done

    init = (jnp.int32(1), tok0, cache, out, lps, n_tok, finish, done)
    steps, _, _, out, lps, n_tok, finish, _ = jax.lax.while_loop(cond, body, init)
    return dict(tokens=out, logprobs=lps, n_tokens=n_tok, finish=finish, steps=steps)



@functools.lru_cache(maxsize=None)
def _cached_fns(cfg: ModelConfig, max_new_tokens: int) -> tuple[Callable, Callable]:
    return make_prefill_fn(cfg, max_new_tokens), make_decode_fn(cfg, max_new_tokens)


def make_prefill_fn(cfg: ModelConfig, max_new_tokens: int, *, in_shardings: Any = None,
                    out_shardings: Any = None) -> Callable:
    """jit of ``(params, tokens [Bp, P], lengths [Bp]) -> (first_logits, KVCache)``."""
    return jit_with_shardings(functools.partial(prefill, cfg, max_new_tokens), in_shardings, out_shardings)


def make_decode_fn(cfg: ModelConfig, max_new_tokens: int, *, in_shardings: Any = None,
                   out_shardings: Any = None) -> Callable:
    """jit of ``decode`` with cfg and max_new_tokens bound; arguments as in ``decode``."""
    return jit_with_shardings(functools.partial(decode, cfg, max_new_tokens), in_shardings, out_shardings)


# ----------------------------------------------------------------------------- the sampler

class Sampler:
    """Samples continuations of already-rendered prompts (chat-template text).

    ``stop_token_ids``: extra token ids that end a sample (reported as "end_of_turn").
    ``end_of_turn``: strings whose single-token ids end a sample; by default the ChatML / Llama-3 /
    Gemma / Mistral end-of-turn markers that the tokenizer knows as one token. The tokenizer's
    ``eos_token_id`` always stops (reported as "eos" unless it is also an end-of-turn token).
    ``max_batch``: rows (prompt x sample) per decode call; bounds memory (each row holds a KV
    cache copy of its prompt).
    """

    DEFAULT_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")

    def __init__(self, cfg: ModelConfig, params: Params, tokenizer: Any, *,
                 stop_token_ids: Sequence[int] | None = None,
                 end_of_turn: Sequence[str] | None = None, max_batch: int = 40,
                 mesh: Any = None, add_special_tokens: bool = False):
        if max_batch < 1:
            raise InputError(f"max_batch: must be >= 1, got {max_batch}")
        self.cfg, self.params, self.tokenizer = cfg, params, tokenizer
        self.max_batch = max_batch
        self.mesh = mesh
        if mesh is not None:
            from valueprobe_jax import sharding as sh  # noqa: PLC0415

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
        self._fns: dict[tuple[int, ...], tuple[Callable, Callable]] = {}
        self.last_stats = SamplerStats()

    # -- compiled functions

    def _functions(self, max_new_tokens: int, prompts: int, rows: int,
                   p: int) -> tuple[Callable, Callable]:
        if self.mesh is None:
            return _cached_fns(self.cfg, max_new_tokens)
        key = (max_new_tokens, prompts, rows, p)
        if key not in self._fns:
            self._fns[key] = self._sharded_fns(*key)
        return self._fns[key]

    def _sharded_fns(self, max_new_tokens: int, prompts: int, rows: int,
                     p: int) -> tuple[Callable, Callable]:
        """Prefill/decode pinned to ``self.mesh``: parameters by their logical axes, prompts and
        sample rows over the batch axes (data, fsdp), the cache's kv heads over tensor."""
        from valueprobe_jax import sharding as sh  # noqa: PLC0415 (only needed with a mesh)

        mesh, cfg = self.mesh, self.cfg
        ps = sh.param_shardings(cfg, mesh)
        rep = sh.replicated(mesh)

        def batch(*shape: int):
            return sh.batch_sharding(mesh, shape)

        def vocab_rows(b: int):
            return jax.sharding.NamedSharding(mesh, sh.logical_to_pspec(
                ("batch", "vocab"), (b, cfg.vocab_size), mesh)[0])

        cache = sh.cache_shardings(cfg, mesh, prompts, p + max_new_tokens)
        prefill_fn = make_prefill_fn(
            cfg, max_new_tokens, in_shardings=(ps, batch(prompts, p), batch(prompts)),
            out_shardings=(vocab_rows(prompts), cache))
        r, m = batch(rows), batch(rows, max_new_tokens)
        decode_fn = make_decode_fn(
            cfg, max_new_tokens,
            in_shardings=(ps, cache, vocab_rows(prompts), batch(prompts), r, r, r, r,
                          rep, rep, rep, rep, rep, rep),
            out_shardings=dict(tokens=m, logprobs=m, n_tokens=r, finish=r, steps=rep))
        return prefill_fn, decode_fn

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
        by_bucket: dict[int, list[int]] = {}
        for i in sorted(range(len(prompts)), key=lambda i: len(token_lists[i])):
            by_bucket.setdefault(prompt_bucket(len(token_lists[i])), []).append(i)
        for bucket, idx in by_bucket.items():
            self._run_bucket(bucket, idx, token_lists, keys, sp, results)
        return results  # type: ignore[return-value]

    def _run_bucket(self, p: int, idx: list[int], token_lists: list[list[int]],
                    keys: Sequence[str], sp: SamplingParams,
                    results: list[list[Generation | None]]) -> None:
        n = sp.num_samples
        # prompts per prefill: as many as fit max_batch sample rows, but no more than this bucket
        # has (rounded up to a power of two, so few shapes compile) — a lone prompt is not
        # prefilled 40 times over
        per_call = max(1, min(self.max_batch // n, 1 << (len(idx) - 1).bit_length()))
        rows = per_call * n if n <= self.max_batch else self.max_batch
        prefill_fn, decode_fn = self._functions(sp.max_new_tokens, per_call, rows, p)
        # stop tables padded to a multiple of 8 entries so their shape rarely changes the jit key
        width = 8 * max(1, -(-len(self.stop_codes) // 8))
        stop_ids = np.full((width,), -1, np.int32)
        stop_codes = np.full((width,), _LENGTH, np.int32)
        stop_ids[:len(self.stop_codes)] = list(self.stop_codes)
        stop_codes[:len(self.stop_codes)] = list(self.stop_codes.values())
        scalars = (np.uint32(sp.seed), np.float32(sp.temperature), np.int32(sp.top_k),
                   np.float32(sp.top_p))
        for c in range(0, len(idx), per_call):
            chunk = idx[c:c + per_call]
            padded = chunk + [chunk[-1]] * (per_call - len(chunk))
            toks = np.zeros((per_call, p), np.int32)
            lens = np.zeros((per_call,), np.int32)
            for j, i in enumerate(padded):
                t = token_lists[i]
                toks[j, p - len(t):] = t
                lens[j] = len(t)
            first_logits, cache = prefill_fn(self.params, toks, lens)
            st = self.last_stats
            st.prefill_calls += 1
            st.prefill_rows += per_call
            # (prompt slot, sample) pairs of this chunk, cut into decode calls of `rows` rows
            pairs = [(j, s) for j in range(len(chunk)) for s in range(n)]
            for r in range(0, len(pairs), rows):
                part = pairs[r:r + rows]
                live = np.zeros((rows,), bool)
                live[:len(part)] = True
                part = part + [part[-1]] * (rows - len(part))
                row_prompt = np.asarray([j for j, _ in part], np.int32)
                row_sample = np.asarray([s for _, s in part], np.uint32)
                row_hash = np.asarray([stable_hash(keys[chunk[j]]) for j, _ in part], np.uint32)
                out = decode_fn(self.params, cache, first_logits, lens, row_prompt, row_hash,
                                row_sample, live, *scalars, stop_ids, stop_codes)
                out = jax.device_get(out)
                st.decode_calls += 1
                st.decode_rows += rows
                st.live_rows += int(live.sum())
                st.decode_steps += int(out["steps"])
                st.tokens += int(out["n_tokens"][live].sum())
                for q, (j, s) in enumerate(part):
                    if live[q]:
                        results[chunk[j]][s] = self._to_generation(out, q)

    def _to_generation(self, out: dict[str, np.ndarray], row: int) -> Generation:
        m = int(out["n_tokens"][row])
        ids = tuple(int(t) for t in out["tokens"][row, :m])
        code = int(out["finish"][row])
        text_ids = ids[:-1] if code != _LENGTH else ids
        text = self.tokenizer.decode(list(text_ids), skip_special_tokens=True)
        lps = tuple(float(x) for x in out["logprobs"][row, :m])
        return Generation(text=text, token_ids=ids, finish_reason=_FINISH[code], logprobs=lps)
