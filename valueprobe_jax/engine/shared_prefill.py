"""One prefill per prompt for all three methods (the probe strategy ``shared_prefill``).

The sampler prefills each decode group's prompts (``Sampler.prefill_groups``: left-padded
caches and next-token logits); the scorer reads the token method's label logits from those
logits and scores the seq method's continuations on top of those caches
(``Scorer.score_prefilled``); the decode loop then starts from the same arrays
(``Sampler.decode``). So the text method's samples are bit-identical to ``Sampler.generate``'s
and no prompt token runs through the model twice. It needs the scorer's prompt ids to equal the
sampler's (``same_prompt_ids``); where a tokenizer's BOS rule makes them differ, callers score
and sample apart as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from valueprobe_jax.engine.requests import Encoded, ScoreResult
from valueprobe_jax.engine.sampler import Generation, Sampler
from valueprobe_jax.engine.sampling import SamplingParams
from valueprobe_jax.engine.scorer import Scorer

SHARED_PREFILL = "shared_prefill"


def same_prompt_ids(encoded: Sequence[Encoded], token_lists: Sequence[Sequence[int]]) -> bool:
    """Whether every request's prompt ids (the scorer's) equal the sampler's for that prompt."""
    return len(encoded) == len(token_lists) and all(
        e.prompt == tuple(t) for e, t in zip(encoded, token_lists))


def score_and_generate(scorer: Scorer, sampler: Sampler, encoded: Sequence[Encoded],
                       token_lists: Sequence[tuple[int, ...]], keys: Sequence[str],
                       sp: SamplingParams | None
                       ) -> tuple[list[ScoreResult], list[list[Generation]] | None]:
    """Score every request and, unless ``sp`` is None, sample it, from one prefill per prompt.

    ``token_lists``: the sampler's ids of the prompts (``Sampler.encode``, equal to the
    requests' prompt ids); ``keys``: the sample keys. Groups run one at a time (prefill, score,
    decode), so one group's cache is alive at once. Results and generations in request order;
    ``sampler.last_stats`` and ``scorer.stats`` count this call's work.
    """
    results: list[ScoreResult | None] = [None] * len(encoded)
    generations: list[list[Generation]] | None = None if sp is None else [[] for _ in encoded]
    for group in sampler.prefill_groups(token_lists, keys):
        scored = scorer.score_prefilled([encoded[i] for i in group.index], group)
        for i, r in zip(group.index, scored):
            results[i] = r
        if generations is not None:
            for i, g in zip(group.index, sampler.decode(group, sp)):
                generations[i] = g
    return results, generations  # type: ignore[return-value]


__all__ = ["SHARED_PREFILL", "same_prompt_ids", "score_and_generate"]
