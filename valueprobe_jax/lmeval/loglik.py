"""Log-likelihoods of lm-eval (context, continuation) token pairs with the engine's packed
prefix-tree scorer: each distinct context once, all its continuations as branches below it, and
contexts that share leading tokens (few-shot examples, a system prompt) sharing those nodes too.

The requests reach the scorer as token ids (``Scorer.score_encoded``) so the split is lm-eval's,
not re-derived from text. ``is_greedy`` comes from a greedy decode of each context (see
``generation.greedy_tokens``): the scorer reports log-likelihoods, not per-token argmaxes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, Callable

from valueprobe_jax.engine import Sampler, Scorer, ScoreRequest
from valueprobe_jax.lmeval.generation import IdPrompts, greedy_tokens
from valueprobe_jax.lmeval.requests import ContextGroup, group_by_context


def encoded_factory(scorer: Scorer) -> Callable[[str, Sequence[int], Sequence[Sequence[int]]], Any]:
    """Build the scorer's encoded records (``Scorer.score_encoded`` input) from token ids.

    The engine package exports the scorer, not its ``Encoded`` record; a record made by the
    public ``Scorer.encode`` serves as the template (no labels: the token method is not used)."""
    template = scorer.encode([ScoreRequest("template", "x", (), ())])[0]

    def make(key: str, prompt: Sequence[int], options: Sequence[Sequence[int]]) -> Any:
        return dataclasses.replace(template, key=key, prompt=tuple(prompt),
                                   options=tuple(tuple(o) for o in options),
                                   boundary_split=False)

    return make


@dataclasses.dataclass
class Timings:
    """Wall seconds spent per stage (summed over calls), for the bench."""

    score_s: float = 0.0
    greedy_s: float = 0.0
    requests: int = 0
    contexts: int = 0

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def score_pairs(scorer: Scorer, sampler: Sampler, adapter: IdPrompts,
                pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, strategy: str,
                max_positions: int, contexts_per_call: int = 512, check_greedy: bool = True,
                timings: Timings | None = None, progress: Callable[[int], None] | None = None
                ) -> list[tuple[float, bool]]:
    """(sum of log p(continuation | context), every token the argmax) per pair, in order.

    Groups are scored ``contexts_per_call`` at a time in context order, so the packing (and so the
    numbers, to the last bit) depends only on the set of requests, never on lm-eval's batch size.
    """
    t = timings or Timings()
    groups = group_by_context(pairs)
    make = encoded_factory(scorer)
    out: list[tuple[float, bool] | None] = [None] * len(pairs)
    scorer.forget_prefixes()  # numbers depend only on this call (prefix_cache strategy)
    for start in range(0, len(groups), contexts_per_call):
        chunk: list[ContextGroup] = groups[start:start + contexts_per_call]
        t0 = time.perf_counter()
        enc = [make(f"ctx{start + k}", g.context, g.continuations) for k, g in enumerate(chunk)]
        results = scorer.score_encoded(enc, strategy)
        t1 = time.perf_counter()
        if check_greedy:
            greedy = greedy_tokens(sampler, adapter, [g.context for g in chunk],
                                   [max(map(len, g.continuations)) for g in chunk], max_positions)
        else:
            greedy = [None] * len(chunk)
        t.greedy_s += time.perf_counter() - t1
        t.score_s += t1 - t0
        for g, r, gt in zip(chunk, results, greedy):
            for i, j in g.requests:
                cont = g.continuations[j]
                is_greedy = gt is not None and tuple(gt[:len(cont)]) == cont
                out[i] = (float(r.option_logprob[j]), bool(is_greedy))
        if progress is not None:
            progress(sum(len(g.requests) for g in chunk))
    t.requests += len(pairs)
    t.contexts += len(groups)
    return out  # type: ignore[return-value]
