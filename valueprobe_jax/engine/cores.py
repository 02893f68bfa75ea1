"""The jitted scoring cores: pure functions ``(params, arrays) -> arrays`` over packed rows.

Each factory takes optional ``in_shardings`` / ``out_shardings``, so the same code runs on one
CPU and on a device mesh (``sharded_core`` pins a core to a mesh with ``parallel.sharding``'s
rules), and an optional ``TraceCounter`` that counts its traces (= XLA compiles). Unsharded cores
are shared by every ``Scorer`` of a config (``shared_core``): jax caches their compiled shapes."""

from __future__ import annotations

import enum
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from valueprobe_jax.engine.traces import TraceCounter, Traced, counted
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.layers import KVCache, forward
from valueprobe_jax.parallel import sharding as sh


class CoreKind(enum.StrEnum):
    """The jitted cores (their values name them in ``ScoreStats.shapes`` and trace counts)."""

    NAIVE = "naive"  # packed rows, LM head at every position first (a plain full forward)
    TREE = "tree"  # packed rows, LM head only where a read needs it
    PREFILL = "prefill"  # a shared prefix into a KV cache
    CACHED = "cached"  # packed rows on top of a prefilled prefix
    PROMPT = "prompt"  # each row's options on top of its own prefilled prompt (shared prefill)


def tree_mask(ends: jax.Array) -> jax.Array:
    """[B, T] subtree ends of depth-first-ordered nodes -> [B, T, T] mask: query t reads key s
    iff s is t or an ancestor of t (s <= t < end[s])."""
    s = jnp.arange(ends.shape[1])
    return (s[None, None, :] <= s[None, :, None]) & (s[None, :, None] < ends[:, None, :])


def read_pairs(logits: jax.Array, pair_at: jax.Array, pair_tok: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    """logits [B, M, V] -> (logit, log-probability) of token ``pair_tok`` at head position
    ``pair_at`` for every read [B, N]."""
    b, m, v = logits.shape
    lse = jax.nn.logsumexp(logits, axis=-1)
    flat = logits.reshape(b, m * v)
    logit = jnp.take_along_axis(flat, pair_at * v + pair_tok, axis=1)
    return logit, logit - jnp.take_along_axis(lse, pair_at, axis=1)


def make_tree_core(cfg: ModelConfig, *, full_head: bool = False, in_shardings: Any = None,
                   out_shardings: Any = None, traces: TraceCounter | None = None) -> Callable:
    """Jitted ``(params, tokens, positions, ends, logits_at, pair_at, pair_tok) -> (logit,
    logprob)`` over packed rows. ``full_head`` runs the LM head on every position first (the
    naive reference, as a plain full forward does)."""

    def core(params, tokens, positions, ends, logits_at, pair_at, pair_tok):
        mask = tree_mask(ends)
        if full_head:
            logits, _ = forward(cfg, params, tokens, positions, mask)
            logits = jnp.take_along_axis(logits, logits_at[..., None], axis=1)
        else:
            logits, _ = forward(cfg, params, tokens, positions, mask, logits_at=logits_at)
        return read_pairs(logits, pair_at, pair_tok)

    kind = CoreKind.NAIVE if full_head else CoreKind.TREE
    return sh.jit_with_shardings(counted(core, kind, traces), in_shardings, out_shardings)


def make_prefill_core(cfg: ModelConfig, *, in_shardings: Any = None, out_shardings: Any = None,
                      traces: TraceCounter | None = None) -> Callable:
    """Jitted ``(params, tokens [1, P], length) -> KVCache`` of a shared prefix (slots at or past
    ``length`` are padding)."""

    def core(params, tokens, length):
        p = tokens.shape[1]
        valid = jnp.arange(p)[None, :] < length
        mask = jnp.tril(jnp.ones((p, p), bool))[None] & valid[:, None, :]
        positions = jnp.arange(p, dtype=jnp.int32)[None, :]
        cache = KVCache.zeros(cfg, 1, p)
        _, cache = forward(cfg, params, tokens, positions, mask, logits_at=jnp.zeros((1, 1), jnp.int32),
                           cache=cache, cache_index=0, return_hidden=True)
        return cache

    return sh.jit_with_shardings(counted(core, CoreKind.PREFILL, traces), in_shardings,
                                 out_shardings)


def make_cached_core(cfg: ModelConfig, *, in_shardings: Any = None, out_shardings: Any = None,
                     traces: TraceCounter | None = None) -> Callable:
    """Jitted ``(params, prefix KVCache [1, P], prefix length, tokens, positions, ends, logits_at,
    pair_at, pair_tok) -> (logit, logprob)``: packed rows on top of a shared prefix whose
    keys/values are broadcast into every row's cache (slots 0..P-1; the row's own tokens follow)."""

    def core(params, prefix, length, tokens, positions, ends, logits_at, pair_at, pair_tok):
        b, t = tokens.shape
        p = prefix.k.shape[2]

        def grow(x):  # [L, 1, P, ...] -> [L, B, P + T, ...]
            x = jnp.broadcast_to(x, (x.shape[0], b) + x.shape[2:])
            pad = jnp.zeros(x.shape[:2] + (t,) + x.shape[3:], x.dtype)
            return jnp.concatenate([x, pad], axis=2)

        pos = jnp.concatenate([jnp.broadcast_to(prefix.pos, (b, p)),
                               jnp.zeros((b, t), jnp.int32)], axis=1)
        cache = KVCache(grow(prefix.k), grow(prefix.v), pos)
        see_prefix = jnp.broadcast_to((jnp.arange(p) < length)[None, None, :], (b, t, p))
        mask = jnp.concatenate([see_prefix, tree_mask(ends)], axis=2)
        logits, _ = forward(cfg, params, tokens, positions, mask, logits_at=logits_at,
                            cache=cache, cache_index=p)
        return read_pairs(logits, pair_at, pair_tok)

    return sh.jit_with_shardings(counted(core, CoreKind.CACHED, traces), in_shardings,
                                 out_shardings)


def make_prompt_core(cfg: ModelConfig, *, in_shardings: Any = None, out_shardings: Any = None,
                     traces: TraceCounter | None = None) -> Callable:
    """Jitted ``(params, prompt KVCache [S, P], lengths [S], first_logits [S, V], which [B],
    tokens, positions, ends, logits_at, pair_at, pair_tok) -> (logit, logprob)``: row b's option
    tree on top of prompt ``which[b]`` of a group prefilled left-padded as the sampler does
    (``decode_loop.prefill``: slots P-n .. P-1 at positions 0..n-1). A ``logits_at`` entry of -1
    reads the prompt's ``first_logits`` (the next-token logits after it: label logits and every
    option's first token)."""

    def core(params, prompt, lengths, first_logits, which, tokens, positions, ends, logits_at,
             pair_at, pair_tok):
        b, t = tokens.shape
        p = prompt.k.shape[2]
        k, v = (jnp.take(x, which, axis=1) for x in (prompt.k, prompt.v))
        pad = jnp.zeros(k.shape[:2] + (t,) + k.shape[3:], k.dtype)
        start = p - jnp.take(lengths, which)[:, None]  # first real slot of each row
        slot = jnp.arange(p)[None, :]
        pos = jnp.concatenate([jnp.maximum(slot - start, 0).astype(jnp.int32),
                               jnp.zeros((b, t), jnp.int32)], axis=1)  # ALiBi reads these
        cache = KVCache(jnp.concatenate([k, pad], axis=2), jnp.concatenate([v, pad], axis=2),
                        pos)
        see_prompt = jnp.broadcast_to((slot >= start)[:, None, :], (b, t, p))
        mask = jnp.concatenate([see_prompt, tree_mask(ends)], axis=2)
        logits, _ = forward(cfg, params, tokens, positions, mask,
                            logits_at=jnp.maximum(logits_at, 0), cache=cache, cache_index=p)
        firsts = jnp.take(first_logits, which, axis=0)
        logits = jnp.where((logits_at < 0)[..., None], firsts[:, None, :], logits)
        return read_pairs(logits, pair_at, pair_tok)

    return sh.jit_with_shardings(counted(core, CoreKind.PROMPT, traces), in_shardings,
                                 out_shardings)


def build_core(cfg: ModelConfig, kind: CoreKind, traces: TraceCounter | None = None) -> Callable:
    """The unsharded jitted core of ``kind``."""
    if kind == CoreKind.PREFILL:
        return make_prefill_core(cfg, traces=traces)
    if kind == CoreKind.CACHED:
        return make_cached_core(cfg, traces=traces)
    if kind == CoreKind.PROMPT:
        return make_prompt_core(cfg, traces=traces)
    return make_tree_core(cfg, full_head=kind == CoreKind.NAIVE, traces=traces)


@functools.lru_cache(maxsize=None)
def shared_core(cfg: ModelConfig, kind: CoreKind) -> Traced:
    """The unsharded core of ``kind``, one per config (jax caches its compiled shapes)."""
    traces = TraceCounter()
    return Traced(build_core(cfg, kind, traces), traces)


def sharded_core(cfg: ModelConfig, mesh: Any, kind: CoreKind, *shape: int) -> Traced:
    """The core pinned to ``mesh``: parameters by their logical axes, rows over the batch axes
    (data, fsdp), a prefix cache replicated over rows with kv heads over tensor (a prompt core's
    per-row caches and first logits over the batch axes, as the sampler places them). ``shape``
    is (P,) for a prefill, else (B, T, M, N) and, for a cached core, P; for a prompt core, the
    group's slots S and P."""
    traces = TraceCounter()
    ps, rep = sh.param_shardings(cfg, mesh), sh.replicated(mesh)
    if kind == CoreKind.PREFILL:
        (p,) = shape
        fn = make_prefill_core(cfg, in_shardings=(ps, rep, rep),
                               out_shardings=sh.cache_shardings(cfg, mesh, 1, p), traces=traces)
        return Traced(fn, traces)
    b, t, m, n = shape[:4]
    bt, bm, bn = (sh.batch_sharding(mesh, s) for s in ((b, t), (b, m), (b, n)))
    rows = (bt, bt, bt, bm, bn, bn)
    if kind == CoreKind.CACHED:
        cache = sh.cache_shardings(cfg, mesh, 1, shape[4])
        fn = make_cached_core(cfg, in_shardings=(ps, cache, rep) + rows, out_shardings=(bn, bn),
                              traces=traces)
    elif kind == CoreKind.PROMPT:
        slots, p = shape[4], shape[5]
        group = (sh.cache_shardings(cfg, mesh, slots, p), sh.batch_sharding(mesh, (slots,)),
                 sh.vocab_rows_sharding(mesh, (slots, cfg.vocab_size)))
        fn = make_prompt_core(cfg, in_shardings=(ps,) + group + (sh.batch_sharding(mesh, (b,)),)
                              + rows, out_shardings=(bn, bn), traces=traces)
    else:
        fn = make_tree_core(cfg, full_head=kind == CoreKind.NAIVE, in_shardings=(ps,) + rows,
                            out_shardings=(bn, bn), traces=traces)
    return Traced(fn, traces)


def abstract_inputs(cfg: ModelConfig, key: tuple) -> tuple:
    """ShapeDtypeStructs of a core's array inputs (after params) for a ``ScoreStats.shapes``
    key ``(kind, B, T, S, M, N)``: for ahead-of-time lowering, e.g. XLA's cost analysis."""
    kind, b, t, s, m, n = key
    i32 = jnp.int32

    def arr(*shape):
        return jax.ShapeDtypeStruct(shape, i32)

    if kind == CoreKind.PREFILL:
        return arr(1, t), arr()
    rows = (arr(b, t), arr(b, t), arr(b, t), arr(b, m), arr(b, n), arr(b, n))
    if kind in (CoreKind.CACHED, CoreKind.PROMPT):
        p, c = s - t, (1 if kind == CoreKind.CACHED else b)
        kv = jax.ShapeDtypeStruct((cfg.num_layers, c, p, cfg.num_kv_heads, cfg.head_dim),
                                  cfg.jnp_dtype)
        if kind == CoreKind.CACHED:
            return (KVCache(kv, kv, arr(1, p)), arr()) + rows
        firsts = jax.ShapeDtypeStruct((b, cfg.vocab_size), jnp.float32)  # a group of B slots
        return (KVCache(kv, kv, arr(b, p)), arr(b), firsts, arr(b)) + rows
    return rows


__all__ = ["CoreKind", "tree_mask", "read_pairs", "make_tree_core", "make_prefill_core",
           "make_cached_core", "make_prompt_core", "build_core", "shared_core", "sharded_core",
           "abstract_inputs"]
