"""The ``Sampler``: the host side of text generation for the *text* method (the gemma way: the
sampler owns the decode loop and its cache; the model knows nothing about prompts or samples).

It tokenizes prompts (``encode``), prefills each once in its length bucket in power-of-two
batches (so jit compiles once per (bucket, batch size) and no padding prompt is ever run), runs
the jitted decode loop of ``decode_loop.py`` on up to ``max_prompts`` prompts (shortest first) at
a time, and turns the loop's arrays into ``Generation`` records. ``generate`` does it all;
``prefill_groups`` and ``decode`` are its two halves, for a caller that reads the prefilled
caches too (``shared_prefill``: the scorer scores the same prompts from them). Prompt-length buckets: powers of two and 1.5x
powers of two from 16 up.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from valueprobe_jax.engine.decode_loop import (END_OF_TURN, EOS, FINISH_REASONS, LENGTH,
                                               PaperInputs, make_decode_fn, make_prefill_fn,
                                               shared_decode, shared_prefill)
from valueprobe_jax.engine.sampling import PaperSettings, SamplingParams, stable_hash
from valueprobe_jax.engine.traces import TraceCounter, Traced
from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.layers import KVCache, Params
from valueprobe_jax.parallel import sharding as sh

# prompt-length buckets: powers of two and 1.5x powers of two from 16 up
_MIN_BUCKET = 16


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
    (``prefill_rows`` prompts in ``prefill_calls`` calls, ``prefill_tokens`` token slots with
    their bucket padding); ``decode_calls`` decode loops ran on
    ``decode_rows`` rows in total for ``live_rows`` real samples. ``decode_steps`` counts sampling
    steps (the first token, drawn from the prefill logits, then one per loop iteration);
    ``row_steps`` the tokens fed through the model (rows busy with a live sample, summed over
    loop iterations); ``tokens`` the tokens generated."""

    prompts: int = 0
    prefill_calls: int = 0
    prefill_rows: int = 0
    prefill_tokens: int = 0
    decode_calls: int = 0
    decode_rows: int = 0
    live_rows: int = 0
    decode_steps: int = 0
    row_steps: int = 0
    tokens: int = 0
    compiles: int = 0  # jit traces (= XLA compiles) this call caused


@dataclasses.dataclass(frozen=True)
class PrefilledGroup:
    """The prompts of one decode call after their prefill (``Sampler.prefill_groups``).

    ``index``: each prompt's place in the caller's list (shortest first); ``first_logits``
    [slots, V]: next-token logits after each prompt; ``cache``: the prompts' keys/values
    left-padded to ``length`` slots (a prompt of n tokens in slots length-n .. length-1 at
    positions 0..n-1; ``cache.pos`` is unused); rows past ``len(index)`` are zero padding.
    """

    index: tuple[int, ...]
    keys: tuple[str, ...]
    tokens: tuple[tuple[int, ...], ...]
    slots: int
    length: int
    first_logits: Any
    cache: KVCache


def prompt_bucket(n: int) -> int:
    """Smallest bucket >= n from 16, 24, 32, 48, 64, 96, ... (at most 1.5x padding)."""
    b = _MIN_BUCKET
    while True:
        if n <= b:
            return b
        if n <= b * 3 // 2:
            return b * 3 // 2
        b *= 2


def power_of_two_parts(n: int) -> list[int]:
    """``n`` as a sum of distinct powers of two, largest first (13 -> [8, 4, 1])."""
    return [1 << b for b in range(n.bit_length() - 1, -1, -1) if n >> b & 1]


def _vocab_rows(cfg: ModelConfig, mesh: Any, b: int) -> Any:
    return sh.vocab_rows_sharding(mesh, (b, cfg.vocab_size))


def prefill_shardings(cfg: ModelConfig, mesh: Any, prompts: int, p: int) -> tuple[Any, Any]:
    """(in, out) shardings of the prefill of ``prompts`` prompts of ``p`` slots on ``mesh``:
    parameters by their logical axes, prompts over the batch axes (data, fsdp)."""
    ins = (sh.param_shardings(cfg, mesh), sh.batch_sharding(mesh, (prompts, p)),
           sh.batch_sharding(mesh, (prompts,)))
    return ins, (_vocab_rows(cfg, mesh, prompts), sh.cache_shardings(cfg, mesh, prompts, p))


def decode_shardings(cfg: ModelConfig, mesh: Any, max_new_tokens: int, num_samples: int,
                     rows: int, prompts: int, p: int, processing: str = "ours") -> dict[str, Any]:
    """``make_decode_fn``'s sharding arguments on ``mesh``: parameters by their logical axes,
    prompts, pairs and the rows' generated keys/values over the batch axes (data, fsdp), kv
    heads over tensor."""
    rep = sh.replicated(mesh)
    gen_shape = (cfg.num_layers, rows, cfg.num_kv_heads, max(1, max_new_tokens - 1),
                 cfg.head_dim)
    gen = jax.sharding.NamedSharding(mesh, sh.logical_to_pspec(
        ("layers", "cache_batch", "kv_heads", "cache_sequence", "head_dim"), gen_shape, mesh)[0])
    pairs = prompts * num_samples
    per_pair = sh.batch_sharding(mesh, (pairs,))
    tokens = sh.batch_sharding(mesh, (pairs, max_new_tokens))
    per_prompt = sh.batch_sharding(mesh, (prompts,))
    ins = (sh.param_shardings(cfg, mesh), sh.cache_shardings(cfg, mesh, prompts, p),
           _vocab_rows(cfg, mesh, prompts), per_prompt, per_prompt, per_prompt,
           rep, rep, rep, rep, rep, rep)
    if processing == "paper":
        ins += (PaperInputs(sh.batch_sharding(mesh, (prompts, p)), PaperSettings(rep, rep)),)
    outs = dict(tokens=tokens, logprobs=tokens, n_tokens=per_pair, finish=per_pair, steps=rep,
                row_steps=rep)
    return dict(in_shardings=ins, out_shardings=outs, gen_sharding=gen)


def abstract_decode_inputs(cfg: ModelConfig, prompts: int, p: int, stops: int = 8) -> tuple:
    """ShapeDtypeStructs of the decode loop's arguments after the parameters, as ``generate``
    passes them for ``prompts`` prompt slots of ``p`` tokens (``stops``: the stop table's
    width): for ahead-of-time lowering (``bench.compile_plan``)."""
    def arr(shape: tuple, dtype: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype)

    kv = arr((cfg.num_layers, prompts, p, cfg.num_kv_heads, cfg.head_dim), cfg.jnp_dtype)
    first = arr((prompts, cfg.vocab_size), jnp.float32)  # prefill's logits are float32
    return (KVCache(kv, kv, arr((prompts, p), jnp.int32)), first,
            arr((prompts,), jnp.int32), arr((prompts,), jnp.uint32), arr((prompts,), bool),
            arr((), jnp.uint32), arr((), jnp.float32), arr((), jnp.int32), arr((), jnp.float32),
            arr((stops,), jnp.int32), arr((stops,), jnp.int32))


class Sampler:
    """Samples continuations of already-rendered prompts (chat-template text).

    ``stop_token_ids``: extra token ids that end a sample (reported as "end_of_turn").
    ``end_of_turn``: strings whose single-token ids end a sample; by default the ChatML / Llama-3 /
    Gemma / Mistral end-of-turn markers that the tokenizer knows as one token. The tokenizer's
    ``eos_token_id`` stops too (reported as "eos" unless it is also an end-of-turn token or in
    ``stop_token_ids``) unless ``always_stop_at_eos=False``.
    To stop on exactly the paper's list (the checkpoint's generation_config eos ids, as
    transformers' ``generate`` does): ``Sampler(..., stop_token_ids=gc.eos_token_ids,
    end_of_turn=(), always_stop_at_eos=False)``; those samples finish as "end_of_turn".
    ``max_batch``: rows of the decode loop (samples in flight at once; each holds keys/values
    for its own new tokens only). ``max_prompts``: prompts per decode call (their keys/values
    are held once, shared by their samples); more prompts per call keep the rows busy longer
    before the queue drains. Both count per batch shard of ``mesh``: its data x fsdp devices
    split the rows and prompts, so each keeps ``max_batch`` rows per read of its weights (a
    memory-bound decode step costs about the same for 8 rows as for 64).
    """

    DEFAULT_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")

    def __init__(self, cfg: ModelConfig, params: Params, tokenizer: Any, *,
                 stop_token_ids: Sequence[int] | None = None,
                 end_of_turn: Sequence[str] | None = None, max_batch: int = 64,
                 max_prompts: int = 32, mesh: Any = None, add_special_tokens: bool = False,
                 always_stop_at_eos: bool = True):
        if max_batch < 1:
            raise InputError(f"max_batch: must be >= 1, got {max_batch}")
        if max_prompts < 1:
            raise InputError(f"max_prompts: must be >= 1, got {max_prompts}")
        self.cfg, self.params, self.tokenizer = cfg, params, tokenizer
        ways = sh.batch_ways(mesh)
        self.max_batch = max_batch * ways
        self.max_prompts = (1 << (max_prompts.bit_length() - 1)) * ways  # a power of two each
        self.mesh = mesh
        if mesh is not None:
            self.params = sh.shard_params(params, mesh, cfg)
        self.add_special_tokens = add_special_tokens
        codes: dict[int, int] = {}
        eos = getattr(tokenizer, "eos_token_id", None) if always_stop_at_eos else None
        for e in (eos if isinstance(eos, (list, tuple)) else [eos]):
            if e is not None:
                codes[int(e)] = EOS
        for s in (self.DEFAULT_END_OF_TURN if end_of_turn is None else end_of_turn):
            ids = tokenizer.encode(s, add_special_tokens=False)
            if len(ids) == 1:
                codes[ids[0]] = END_OF_TURN
            elif end_of_turn is not None:
                raise InputError(f"end_of_turn {s!r}: is not a single token of this tokenizer")
        for t in stop_token_ids or ():
            codes[int(t)] = END_OF_TURN
        self.stop_codes = codes
        # (ids, codes) padded to a multiple of 8 entries so their shape rarely changes the jit key
        width = 8 * max(1, -(-len(codes) // 8))
        ids_arr = np.full((width,), -1, np.int32)
        codes_arr = np.full((width,), LENGTH, np.int32)
        ids_arr[:len(codes)], codes_arr[:len(codes)] = list(codes), list(codes.values())
        self._stop_table = (ids_arr, codes_arr)
        self._fns: dict[tuple[Any, ...], Traced] = {}
        self.traces = TraceCounter()  # traces (= XLA compiles) that this Sampler's calls caused
        self.last_stats = SamplerStats()

    # -- compiled functions

    def _prefill_fn(self, prompts: int, p: int) -> Traced:
        if self.mesh is None:
            return shared_prefill(self.cfg)
        key = ("prefill", prompts, p)
        if key not in self._fns:
            traces = TraceCounter()
            ins, outs = prefill_shardings(self.cfg, self.mesh, prompts, p)
            self._fns[key] = Traced(make_prefill_fn(self.cfg, in_shardings=ins,
                                                    out_shardings=outs, traces=traces), traces)
        return self._fns[key]

    def _decode_fn(self, max_new_tokens: int, num_samples: int, rows: int, prompts: int,
                   p: int, processing: str = "ours") -> Traced:
        if self.mesh is None:
            return shared_decode(self.cfg, max_new_tokens, num_samples, rows, processing)
        key = ("decode", max_new_tokens, num_samples, rows, prompts, p, processing)
        if key not in self._fns:
            traces = TraceCounter()
            self._fns[key] = Traced(make_decode_fn(
                self.cfg, max_new_tokens, num_samples, rows, traces=traces,
                processing=processing,
                **decode_shardings(self.cfg, self.mesh, *key[1:])), traces)
        return self._fns[key]

    # -- public API

    def generate(self, prompts: Sequence[str], keys: Sequence[str],
                 sp: SamplingParams = SamplingParams()) -> list[list[Generation]]:
        """``sp.num_samples`` generations for every prompt, in prompt order.

        ``keys`` name the prompts stably (e.g. "style/variant/country/qid"); sample i of a prompt
        depends only on (sp.seed, its key, i) and the model, never on batching.
        """
        sp.validate()
        results: list[list[Generation]] = [[] for _ in prompts]
        for group in self.prefill_groups(self.encode(prompts, keys, sp.max_new_tokens), keys):
            for i, gens in zip(group.index, self.decode(group, sp)):
                results[i] = gens
        return results

    def encode(self, prompts: Sequence[str], keys: Sequence[str],
               max_new_tokens: int = 0) -> list[tuple[int, ...]]:
        """The prompts' token ids as this sampler prefills them (checked: none empty, each with
        room for ``max_new_tokens`` within the model's positions)."""
        if len(keys) != len(prompts):
            raise InputError(f"keys: need one key per prompt ({len(prompts)}), got {len(keys)}")
        token_lists = [tuple(self.tokenizer.encode(p, add_special_tokens=self.add_special_tokens))
                       for p in prompts]
        for i, t in enumerate(token_lists):
            if not t:
                raise InputError(f"prompt {i} ({keys[i]!r}): is empty after tokenization")
            if len(t) + max_new_tokens > self.cfg.max_position_embeddings:
                raise InputError(f"prompt {keys[i]!r}: {len(t)} tokens + {max_new_tokens} new "
                                 f"exceed the model's {self.cfg.max_position_embeddings} positions")
        return token_lists

    def prefill_groups(self, token_lists: Sequence[tuple[int, ...]],
                       keys: Sequence[str]) -> Iterator[PrefilledGroup]:
        """The prompts (ids from ``encode``) in decode calls of up to ``max_prompts``, shortest
        first, each prefilled when the iterator reaches it (one group's cache alive at a time).
        Starts a new ``last_stats``; ``decode`` of each group adds to it."""
        self.last_stats = SamplerStats(prompts=len(token_lists))
        order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
        for c in range(0, len(order), self.max_prompts):
            group = tuple(order[c:c + self.max_prompts])
            toks = tuple(token_lists[i] for i in group)
            slots = 1 << (len(group) - 1).bit_length()  # prompts in the decode call
            p = prompt_bucket(max(map(len, toks)))
            before = self.traces.total
            first_logits, cache = self._prefill_group(toks, slots, p)
            self.last_stats.compiles += self.traces.total - before
            yield PrefilledGroup(group, tuple(keys[i] for i in group), toks, slots, p,
                                 first_logits, cache)

    def decode(self, group: PrefilledGroup, sp: SamplingParams) -> list[list[Generation]]:
        """One decode call on a prefilled group, all samples of its prompts sharing the rows of
        one continuous-batching loop; generations in the group's prompt order."""
        sp.validate()
        longest = max(map(len, group.tokens))
        if longest + sp.max_new_tokens > self.cfg.max_position_embeddings:
            raise InputError(f"decode: a prompt of {longest} tokens + {sp.max_new_tokens} new "
                             f"exceed the model's {self.cfg.max_position_embeddings} positions")
        n, slots, p = sp.num_samples, group.slots, group.length
        scalars = (np.uint32(sp.seed), np.float32(sp.temperature), np.int32(sp.top_k),
                   np.float32(sp.top_p))
        rows = min(self.max_batch, slots * n)
        lens = np.zeros((slots,), np.int32)
        hashes = np.zeros((slots,), np.uint32)
        live = np.zeros((slots,), bool)
        for j, (t, key) in enumerate(zip(group.tokens, group.keys)):
            lens[j], hashes[j], live[j] = len(t), stable_hash(key), True
        extra: tuple[Any, ...] = ()
        if sp.processing == "paper":  # the prompts' ids, left-padded as prefilled
            ids = np.zeros((slots, p), np.int32)
            for j, t in enumerate(group.tokens):
                ids[j, p - len(t):] = t
            extra = (PaperInputs(ids, PaperSettings.of(sp)),)
        before = self.traces.total
        out = self._decode_fn(sp.max_new_tokens, n, rows, slots, p, sp.processing).run(
            self.traces, "decode", self.params, group.cache, group.first_logits, lens, hashes,
            live, *scalars, *self._stop_table, *extra)
        out = jax.device_get(out)
        st = self.last_stats
        st.compiles += self.traces.total - before
        st.decode_calls += 1
        st.decode_rows += rows
        st.live_rows += len(group.index) * n
        st.decode_steps += int(out["steps"]) + 1
        st.row_steps += int(out["row_steps"])
        st.tokens += int(out["n_tokens"].sum())
        return [[self._to_generation(out, j * n + s_) for s_ in range(n)]
                for j in range(len(group.index))]

    def _prefill_group(self, group: Sequence[tuple[int, ...]], slots: int,
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
            for size in power_of_two_parts(end - start):
                toks = np.zeros((size, b), np.int32)
                lens = np.zeros((size,), np.int32)
                for j, t in enumerate(group[start:start + size]):
                    toks[j, b - len(t):] = t
                    lens[j] = len(t)
                lg, cache = self._prefill_fn(size, b).run(self.traces, "prefill", self.params,
                                                          toks, lens)
                widen = ((0, 0), (0, 0), (p - b, 0), (0, 0), (0, 0))
                logits.append(lg)
                ks.append(jnp.pad(cache.k, widen) if b < p else cache.k)
                vs.append(jnp.pad(cache.v, widen) if b < p else cache.v)
                start += size
                st.prefill_calls += 1
                st.prefill_rows += size
                st.prefill_tokens += size * b
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
            first = jax.device_put(first, _vocab_rows(self.cfg, self.mesh, slots))
            cache = jax.device_put(cache, sh.cache_shardings(self.cfg, self.mesh, slots, p))
        return first, cache

    def _to_generation(self, out: dict[str, np.ndarray], row: int) -> Generation:
        m = int(out["n_tokens"][row])
        ids = tuple(int(t) for t in out["tokens"][row, :m])
        code = int(out["finish"][row])
        text_ids = ids[:-1] if code != LENGTH else ids
        text = self.tokenizer.decode(list(text_ids), skip_special_tokens=True)
        lps = tuple(float(x) for x in out["logprobs"][row, :m])
        return Generation(text=text, token_ids=ids, finish_reason=FINISH_REASONS[code], logprobs=lps)


__all__ = ["Generation", "SamplerStats", "PrefilledGroup", "Sampler", "prompt_bucket",
           "power_of_two_parts", "prefill_shardings", "decode_shardings", "abstract_decode_inputs"]
