"""The ``Scorer``: label-token logits (token method) and continuation log-likelihoods (seq method)
of many requests, by one of four interchangeable strategies that compute the same numbers
(within float32 rounding):

- ``naive``: the paper's procedure, the reference: one full forward (LM head at every position)
  per option over prompt + option, plus one over the prompt alone for the label logits.
- ``padded``: every (prompt + option) its own row of a padded batch; LM head only where needed.
- ``packed`` (default): token sequences packed as a *prefix tree* into rows (``packing.py``); the
  LM head runs only at nodes whose next-token distribution is needed.
- ``prefix_cache``: prompts are grouped by a long common token prefix (system instruction,
  one-shot example, shared template text); each group's prefix is prefilled once into a KV cache,
  kept on the ``Scorer`` for later calls, and broadcast into the cache of every row that continues
  it; the rest of each prompt and its options are packed on top as in ``packed``.

A plan is a list of jitted calls (``calls.Call``); the Scorer runs them on the cores of
``cores.py`` (on ``mesh`` when given), accumulates ``stats`` and maps the reads back to requests.

Float32 note: strategies run different shapes, so XLA sums in different orders; on SmolLM2 two
runs of the *same* forward at two padded lengths already differ by ~3e-5 on logits of size ~30
(1e-6 relative) and ~1e-5 per token on log-likelihoods; on small random models all strategies
agree within 1e-5 absolute.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from valueprobe_jax.engine.calls import Call, RowArrays, bucket_length, calls_of, lay_out
from valueprobe_jax.engine.cores import CoreKind, shared_core, sharded_core
from valueprobe_jax.engine.flops import flops_estimate
from valueprobe_jax.engine.packing import Item, Row, common_prefix, pack
from valueprobe_jax.engine.ratings import RatingResult, rate
from valueprobe_jax.engine.labels import LOOKUPS
from valueprobe_jax.engine.sampler import PrefilledGroup, power_of_two_parts
from valueprobe_jax.engine.requests import (BOUNDARIES, Encoded, ScoreRequest, ScoreResult,
                                            ScoreStats, encode_request)
from valueprobe_jax.engine.traces import TraceCounter, Traced
from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.decoder import nest_params
from valueprobe_jax.models.layers import KVCache
from valueprobe_jax.parallel import sharding as sh


class Strategy(enum.StrEnum):
    """How a ``Scorer`` lays out its forwards (module docstring); the values are the config
    strings."""

    NAIVE = "naive"
    PADDED = "padded"
    PACKED = "packed"
    PREFIX_CACHE = "prefix_cache"


STRATEGIES: tuple[str, ...] = tuple(s.value for s in Strategy)


def unpack_model(model: Any, tokenizer: Any = None) -> tuple[ModelConfig, dict[str, Any], Any]:
    """(cfg, params) / (cfg, params, tokenizer) / an object with .cfg, .params (attribute or
    method, as the NNX Decoder) and optionally .tokenizer -> (cfg, nested params, tokenizer)."""
    if isinstance(model, tuple):
        cfg, params = model[0], model[1]
        tok = model[2] if len(model) > 2 else None
    else:
        cfg, params = model.cfg, model.params
        params = params() if callable(params) else params
        tok = getattr(model, "tokenizer", None)
    tok = tokenizer if tokenizer is not None else tok
    if tok is None:
        raise InputError("model: no tokenizer given and the model carries none")
    flat = any("/" in k for k in params)
    return cfg, (nest_params(params) if flat else dict(params)), tok


class Scorer:
    """Scores requests with any strategy; owns the jitted functions, the prefilled prefixes (for
    ``prefix_cache``, reused across calls of a sweep) and the running ``stats``.

    ``tokens_per_call`` bounds B * T of one call; ``max_row`` the longest packed row tried;
    ``min_prefix`` the shortest shared prefix worth a cache; ``per_octave`` the row-length
    buckets per doubling (4: little padding; 1: powers of two, fewer compiles), or
    ``length_buckets`` an explicit list of allowed row lengths (e.g. one fixed shape for a pod);
    ``max_batch`` caps the rows per call;
    ``add_special_tokens`` overrides the
    BOS rule for prompts (None: tokenizer defaults unless the text starts with the BOS string).
    ``label_lookup`` ("tokenize" ours | "vocab" the paper's) picks the label token ids
    (``engine.labels``); ``boundary`` ("retokenize" ours | "slice" the paper's) the continuation
    tokens where the tokenizer merges across the prompt's end (``engine.requests``).
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, mesh: Any = None,
                 tokens_per_call: int = 4096, max_row: int = 2048, min_prefix: int = 32,
                 max_prefixes: int = 64, per_octave: int = 4,
                 length_buckets: Sequence[int] | None = None, max_batch: int | None = None,
                 add_special_tokens: bool | None = None, label_lookup: str = "tokenize",
                 boundary: str = "retokenize"):
        self.cfg, params, self.tokenizer = unpack_model(model, tokenizer)
        if label_lookup not in LOOKUPS:
            raise InputError(f"label_lookup {label_lookup!r}: choose from {', '.join(LOOKUPS)}")
        if boundary not in BOUNDARIES:
            raise InputError(f"boundary {boundary!r}: choose from {', '.join(BOUNDARIES)}")
        self.label_lookup, self.boundary = label_lookup, boundary
        self.mesh = mesh
        if mesh is not None:
            self.params = sh.shard_params(params, mesh, self.cfg)
        else:
            self.params = jax.tree.map(jnp.asarray, params)
        self.tokens_per_call = int(tokens_per_call)
        self.max_row = int(max_row)
        self.min_prefix = int(min_prefix)
        self.max_prefixes = int(max_prefixes)
        if per_octave < 1 or per_octave & (per_octave - 1):
            raise InputError(f"per_octave: must be a power of two, got {per_octave}")
        self.per_octave = int(per_octave)
        self.length_buckets = sorted(int(b) for b in length_buckets) if length_buckets else None
        self.max_batch = max_batch
        self.add_special_tokens = add_special_tokens
        self.stats = ScoreStats()
        self.traces = TraceCounter()  # traces (= XLA compiles) that this Scorer's calls caused
        self._labels: dict[tuple[str, str], tuple[int, bool]] = {}
        self._prefixes: dict[tuple[int, ...], tuple[KVCache, int]] = {}  # insertion = LRU order
        self._fns: dict[tuple, Traced] = {}

    # -- public API

    def forget_prefixes(self) -> None:
        """Drop the prefilled prefixes kept from earlier calls. A caller that needs results to
        depend only on the current call (a resumable sweep: a chunk must give the same numbers
        whether or not earlier chunks ran in this process) calls this first."""
        self._prefixes.clear()

    def encode(self, requests: Sequence[ScoreRequest]) -> list[Encoded]:
        """Tokenize requests with this Scorer's tokenizer and BOS rule."""
        return [encode_request(self.tokenizer, r, add_special_tokens=self.add_special_tokens,
                               label_cache=self._labels, label_lookup=self.label_lookup,
                               boundary=self.boundary) for r in requests]

    def score(self, requests: Sequence[ScoreRequest], strategy: str = "packed") -> list[ScoreResult]:
        """Raw numbers of every request (in request order) by ``strategy``."""
        return self.score_encoded(self.encode(requests), strategy)

    def score_encoded(self, encoded: Sequence[Encoded], strategy: str = "packed"
                      ) -> list[ScoreResult]:
        """``score`` of already tokenized requests."""
        if strategy not in STRATEGIES:
            raise InputError(f"strategy {strategy!r}: unknown (choose from {', '.join(STRATEGIES)})")
        encoded = list(encoded)
        if not encoded:
            return []
        limit = self.cfg.max_position_embeddings
        for e in encoded:
            longest = len(e.prompt) + max(map(len, e.options), default=0)
            if longest > limit:
                raise InputError(f"request {e.key!r}: {longest} tokens exceed the model's "
                                 f"{limit} positions")
        before = self.traces.total
        calls = self._plan(Strategy(strategy), encoded)
        outputs = self._run(calls)
        self.stats.compiles += self.traces.total - before
        return self._collect(encoded, calls, outputs)

    def score_prefilled(self, encoded: Sequence[Encoded], group: PrefilledGroup
                        ) -> list[ScoreResult]:
        """``score`` of the prompts of a ``Sampler`` group from its prefill (the shared-prefill
        path: no prompt token runs again). ``encoded[j]`` is the group's prompt j (same ids);
        label logits are read from the group's next-token logits, each prompt's options run as
        one row (a prefix tree) on top of that prompt's cache. Rows are sorted by tree size and
        run in power-of-two batches (no padding row; each batch padded to its own longest)."""
        encoded = list(encoded)
        if len(encoded) != len(group.index):
            raise InputError(f"score_prefilled: {len(encoded)} requests for a group of "
                             f"{len(group.index)} prompts")
        rows = []
        for j, (e, ids) in enumerate(zip(encoded, group.tokens)):
            if e.prompt != tuple(ids):
                raise InputError(f"request {e.key!r}: its prompt ids differ from the ids the "
                                 f"sampler prefilled")
            longest = len(e.prompt) + max(map(len, e.options), default=0)
            if longest > self.cfg.max_position_embeddings:
                raise InputError(f"request {e.key!r}: {longest} tokens exceed the model's "
                                 f"{self.cfg.max_position_embeddings} positions")
            row = Row()
            row.add(Item(j, (), e.options, tuple(range(len(e.options))),
                         tuple(e.label_ids.ravel())))
            rows.append(lay_out(row, len(e.prompt)))
        lengths = np.zeros((group.slots,), np.int32)
        lengths[:len(encoded)] = [len(e.prompt) for e in encoded]
        order = sorted(range(len(rows)), key=lambda j: len(rows[j].tokens))
        before = self.traces.total
        calls, pending, start = [], [], 0
        for size in power_of_two_parts(len(order)):  # the most rows take the smallest trees
            which = np.asarray(order[start:start + size], np.int32)
            start += size
            call = Call([rows[j] for j in which], self._bucket(max(len(rows[j].tokens)
                                                                   for j in which)))
            a = call.arrays()
            b, t = a["tokens"].shape
            m, n = a["logits_at"].shape[1], a["pair_at"].shape[1]
            core = self._core(CoreKind.PROMPT, b, t, m, n, group.slots, group.length)
            pending.append(self._call(core, CoreKind.PROMPT, group.cache, lengths,
                                      group.first_logits, which, a["tokens"], a["positions"],
                                      a["ends"], a["logits_at"], a["pair_at"], a["pair_tok"]))
            self._count(call, a, CoreKind.PROMPT, group.length + t, m)
            calls.append(call)
        self.stats.compiles += self.traces.total - before
        return self._collect(encoded, calls, jax.device_get(pending))

    def rate(self, prompts: Sequence[tuple[str, str]] | Mapping[str, str],
             strategy: str = "packed") -> list[RatingResult]:
        """1-10 ratings of (key, prompt) pairs from the next-token distribution
        (``ratings.rate``)."""
        return rate(self, prompts, strategy)

    # -- plans: each returns the list of jitted calls

    def _plan(self, strategy: Strategy, enc: list[Encoded]) -> list[Call]:
        match strategy:
            case Strategy.NAIVE:
                return self._plan_naive(enc)
            case Strategy.PADDED:
                return self._plan_padded(enc)
            case Strategy.PACKED:
                return self._plan_packed(enc)
            case Strategy.PREFIX_CACHE:
                return self._plan_prefix_cache(enc)
        raise AssertionError(strategy)

    def _plan_naive(self, enc: list[Encoded]) -> list[Call]:
        calls = []
        for i, e in enumerate(enc):
            chains = [Item(i, e.prompt, (), (), tuple(e.label_ids.ravel()))]
            chains += [Item(i, e.prompt, (o,), (j,), ()) for j, o in enumerate(e.options)]
            for item in chains:
                row = Row()
                row.add(item)
                calls.append(Call([lay_out(row, 0)], self._bucket(len(row)), full_head=True))
        return calls

    def _plan_padded(self, enc: list[Encoded]) -> list[Call]:
        by_len: dict[int, list[RowArrays]] = {}
        for i, e in enumerate(enc):
            labels = tuple(e.label_ids.ravel())
            chains = [Item(i, e.prompt, (o,), (j,), labels if j == 0 else ())
                      for j, o in enumerate(e.options)] or [Item(i, e.prompt, (), (), labels)]
            for item in chains:
                row = Row()
                row.add(item)
                by_len.setdefault(self._bucket(len(row)), []).append(lay_out(row, 0))
        calls = []
        for length in sorted(by_len):
            calls += calls_of(by_len[length], length, self.tokens_per_call, self.max_batch)
        return calls

    @staticmethod
    def _items(enc: list[Encoded], order: Sequence[int], skip: int = 0) -> list[Item]:
        return [Item(i, enc[i].prompt[skip:], enc[i].options, tuple(range(len(enc[i].options))),
                      tuple(enc[i].label_ids.ravel())) for i in order]

    def _plan_packed(self, enc: list[Encoded]) -> list[Call]:
        order = sorted(range(len(enc)), key=lambda i: enc[i].prompt)
        rows, length = pack(self.cfg, self._items(enc, order), self._row_bucket,
                             max_row=self.max_row)
        return calls_of([lay_out(r, 0) for r in rows], length, self.tokens_per_call,
                        self.max_batch)

    def _plan_prefix_cache(self, enc: list[Encoded]) -> list[Call]:
        calls = []
        for prefix, idx in self._prefix_groups(enc):
            p = len(prefix)
            if p:
                self._ensure_prefix(prefix)
            items = [Item(i, enc[i].prompt[p:], enc[i].options,
                           tuple(range(len(enc[i].options))), tuple(enc[i].label_ids.ravel()))
                     for i in idx]
            rows, length = pack(self.cfg, items, self._row_bucket,
                                 extra_keys=self._bucket(p) if p else 0, max_row=self.max_row)
            calls += calls_of([lay_out(r, p) for r in rows], length, self.tokens_per_call,
                               self.max_batch, prefix=prefix if p else None)
        return calls

    def _prefix_groups(self, enc: list[Encoded]) -> list[tuple[tuple[int, ...], list[int]]]:
        """Runs of prompts (in sorted order) whose neighbours share >= min_prefix leading tokens;
        a run's prefix is its common prefix (at most each prompt's length - 1, so every prompt
        keeps its own last token). A lone prompt reuses the longest prefix already cached that
        fits it, if any."""
        order = sorted(range(len(enc)), key=lambda i: enc[i].prompt)
        runs: list[list[int]] = []
        lcps: list[int] = []
        for i in order:
            if runs:
                a, b = enc[runs[-1][-1]].prompt, enc[i].prompt
                lcp = common_prefix(a, b)
                if lcp >= self.min_prefix:
                    runs[-1].append(i)
                    lcps[-1] = min(lcps[-1], lcp)
                    continue
            runs.append([i])
            lcps.append(1 << 30)
        groups = []
        for run, lcp in zip(runs, lcps):
            first = enc[run[0]].prompt
            cap = min(len(enc[i].prompt) for i in run) - 1
            if len(run) > 1:
                p = min(lcp, cap)
            else:
                fits = [len(q) for q in self._prefixes if len(q) <= cap and first[:len(q)] == q]
                p = max(fits, default=0)
            groups.append((first[:p] if p >= self.min_prefix else (), run))
        return groups

    def _ensure_prefix(self, prefix: tuple[int, ...]) -> None:
        if prefix in self._prefixes:
            self._prefixes[prefix] = self._prefixes.pop(prefix)  # most recently used
            return
        p = self._bucket(len(prefix))
        tokens = np.zeros((1, p), np.int32)
        tokens[0, :len(prefix)] = prefix
        cache = self._call(self._core(CoreKind.PREFILL, p), CoreKind.PREFILL, tokens,
                           np.int32(len(prefix)))
        self.stats.calls += 1
        self.stats.tokens_processed += p
        self.stats.tokens_real += len(prefix)
        self.stats.flops += flops_estimate(self.cfg, 1, p, p, 0)
        self.stats.add_call((CoreKind.PREFILL, 1, p, p, 0, 0))
        self._prefixes[prefix] = (cache, len(prefix))
        while len(self._prefixes) > self.max_prefixes:
            self._prefixes.pop(next(iter(self._prefixes)))

    # -- execution

    def _row_bucket(self, n: int) -> int:
        """Packed rows: twice as many lengths per octave as single sequences (a packed row is
        long and one length serves the whole plan, so finer steps cost few extra compiles)."""
        if self.length_buckets is None:
            return bucket_length(n, minimum=64, per_octave=2 * self.per_octave)
        return self._bucket(n)

    def _bucket(self, n: int) -> int:
        if self.length_buckets is None:
            return bucket_length(n, per_octave=self.per_octave)
        for b in self.length_buckets:
            if b >= n:
                return b
        raise InputError(f"length_buckets: {n} tokens do not fit the largest bucket "
                         f"{self.length_buckets[-1]}")

    def _core(self, kind: CoreKind, *shape: int) -> Traced:
        if self.mesh is None:
            return shared_core(self.cfg, kind)
        key = (kind,) + shape
        if key not in self._fns:
            self._fns[key] = sharded_core(self.cfg, self.mesh, kind, *shape)
        return self._fns[key]

    def _call(self, core: Traced, kind: CoreKind, *arrays: Any) -> Any:
        """Run ``core`` on this Scorer's parameters, counting the traces it caused."""
        return core.run(self.traces, kind, self.params, *arrays)

    def _run(self, calls: list[Call]) -> list[tuple[np.ndarray, np.ndarray]]:
        pending = []
        for c in calls:
            a = c.arrays()
            b, t = a["tokens"].shape
            m, n = a["logits_at"].shape[1], a["pair_at"].shape[1]
            rows = (a["tokens"], a["positions"], a["ends"], a["logits_at"], a["pair_at"],
                    a["pair_tok"])
            if c.prefix is not None:
                cache, length = self._prefixes[c.prefix]
                p = cache.k.shape[2]
                kind, keys = CoreKind.CACHED, p + t
                out = self._call(self._core(kind, b, t, m, n, p), kind, cache, np.int32(length),
                                 *rows)
            else:
                kind = CoreKind.NAIVE if c.full_head else CoreKind.TREE
                out = self._call(self._core(kind, b, t, m, n), kind, *rows)
                keys = t
            self._count(c, a, kind, keys, t if c.full_head else m)
            pending.append(out)
        return jax.device_get(pending)

    def _count(self, c: Call, a: dict[str, np.ndarray], kind: CoreKind, keys: int,
               head: int) -> None:
        """Add one call of ``c`` (its ``arrays()``: ``a``) to ``stats`` (``keys``: attended
        slots per row, ``head``: LM-head positions per row)."""
        b, t = a["tokens"].shape
        st = self.stats
        st.calls += 1
        st.rows += b
        st.tokens_processed += b * t
        st.tokens_real += sum(len(r.tokens) for r in c.rows)
        st.head_positions += b * head
        st.flops += flops_estimate(self.cfg, b, t, keys, head)
        st.add_call((kind, b, t, keys, a["logits_at"].shape[1], a["pair_at"].shape[1]))

    def _collect(self, enc: list[Encoded], calls: list[Call],
                 outputs: list[tuple[np.ndarray, np.ndarray]]) -> list[ScoreResult]:
        labels = [np.full(e.label_ids.size, np.nan) for e in enc]
        opts = [np.zeros(len(e.options)) for e in enc]
        for c, (logit, logprob) in zip(calls, outputs):
            for i, r in enumerate(c.rows):
                n = len(r.pair_at)
                lg = logit[i, :n].astype(np.float64)
                lp = logprob[i, :n].astype(np.float64)
                for q in np.flatnonzero(r.pair_kind == 1):
                    labels[r.pair_req[q]][r.pair_idx[q]] = lg[q]
                for q in np.flatnonzero(r.pair_kind == 2):
                    opts[r.pair_req[q]][r.pair_idx[q]] += lp[q]
        return [ScoreResult(key=e.key, token_logits=lab[0::2], token_logits_space=lab[1::2],
                            label_token_ids=e.label_ids, label_multi_token=e.label_multi,
                            option_logprob=o,
                            option_ntokens=np.asarray([len(x) for x in e.options], np.int64),
                            n_prompt_tokens=len(e.prompt), boundary_split=e.boundary_split)
                for e, lab, o in zip(enc, labels, opts)]


def score(model: Any, tokenizer: Any = None, requests: Sequence[ScoreRequest] = (), *,
          strategy: str = "packed", mesh: Any = None, scorer: Scorer | None = None,
          **options: Any) -> list[ScoreResult]:
    """Score ``requests`` with ``strategy`` (one of STRATEGIES; all give the same numbers).

    ``model``: (cfg, params[, tokenizer]) or an object with .cfg/.params/.tokenizer (a
    ``checkpoints.LoadedModel``). ``options`` go to ``Scorer``; pass ``scorer`` to reuse one
    (its jitted functions, cached prefixes and stats) across calls.
    """
    s = scorer if scorer is not None else Scorer(model, tokenizer, mesh=mesh, **options)
    return s.score(requests, strategy=strategy)


def rating_distribution(model: Any, tokenizer: Any = None,
                        prompts: Sequence[tuple[str, str]] | Mapping[str, str] = (), *,
                        strategy: str = "packed", mesh: Any = None, scorer: Scorer | None = None,
                        **options: Any) -> list[RatingResult]:
    """Expected 1-10 rating of each (key, prompt) from the next-token distribution (see
    ``RatingResult``); prompts are generation-ready and end where the number begins. Uses the
    same scoring machinery (and strategies) as ``score``."""
    s = scorer if scorer is not None else Scorer(model, tokenizer, mesh=mesh, **options)
    return s.rate(prompts, strategy)


__all__ = ["Strategy", "STRATEGIES", "Scorer", "score", "rating_distribution", "unpack_model"]
