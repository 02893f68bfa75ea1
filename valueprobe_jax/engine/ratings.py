"""Action ratings: the next-token distribution over "1".."10" after a rating prompt.

A rating is read from the same label logits and continuation log-likelihoods the token and seq
methods use, so it runs on a ``Scorer`` with any strategy (``Scorer.rate``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from valueprobe_jax.engine.labels import label_token
from valueprobe_jax.engine.requests import Encoded, ScoreRequest, ScoreResult, text_ids
from valueprobe_jax.vocabulary import RATINGS


class EncodingScorer(Protocol):
    """What rating needs of a scorer: its tokenizer, ``encode`` and ``score_encoded``."""

    tokenizer: Any

    def encode(self, requests: Sequence[ScoreRequest]) -> list[Encoded]: ...

    def score_encoded(self, encoded: Sequence[Encoded], strategy: str = ...
                      ) -> list[ScoreResult]: ...


@dataclasses.dataclass
class RatingResult:
    """A 1-10 rating read from the next-token distribution.

    ``probs[r - 1]`` is P(rating r), renormalised over the ten ratings. When "10" is several
    tokens ("1" then "0"), the mass of the first token "1" is split with q = P("0" | prompt + "1"):
    P(10) = P("1") * q and P(1) = P("1") * (1 - q); anything else after "1" (end of turn, ".",
    another digit) counts as the rating 1.
    """

    key: str
    probs: np.ndarray  # [10]
    expected: float  # sum_r r * probs[r - 1]
    ten_split: bool  # "10" is more than one token for this tokenizer
    p_zero_after_one: float  # q above (nan when "10" is one token or could not be split)
    n_prompt_tokens: int




def rate(scorer: EncodingScorer, prompts: Sequence[tuple[str, str]] | Mapping[str, str],
         strategy: str) -> list[RatingResult]:
    """Ratings of (key, prompt) pairs (see ``RatingResult``) scored by ``scorer``."""
    items = list(prompts.items()) if isinstance(prompts, Mapping) else list(prompts)
    tok = scorer.tokenizer
    ten = text_ids(tok, "10", False)
    ten_split = len(ten) > 1
    labels = [str(r) for r in RATINGS[:9]] + ([] if ten_split else ["10"])
    conts = ["1", "10"] if ten_split else []
    enc = scorer.encode([ScoreRequest(k, p, conts, labels) for k, p in items])
    results = scorer.score_encoded(enc, strategy)
    zero = label_token(tok, "0")[0]
    out = []
    for e, r in zip(enc, results):
        # candidate next tokens: every single-token form (bare "7", and " 7" where that is one
        # token); a form that is several tokens would only contribute its shared first token
        cand: dict[int, tuple[int, float]] = {}
        for i in range(len(labels)):
            for form, logits in ((0, r.token_logits), (1, r.token_logits_space)):
                if not e.label_multi[i, form]:
                    cand.setdefault(int(e.label_ids[i, form]), (i, float(logits[i])))
        probs = np.zeros(10)
        if cand:
            idx = np.asarray([i for i, _ in cand.values()])
            lg = np.asarray([v for _, v in cand.values()])
            p = np.exp(lg - lg.max())
            np.add.at(probs, idx, p / p.sum())
        q = float("nan")
        if ten_split:
            ok = (len(e.options[0]) == 1 and e.options[1] == e.options[0] + (zero,))
            if ok:
                q = float(np.exp(r.option_logprob[1] - r.option_logprob[0]))
                probs[9], probs[0] = probs[0] * q, probs[0] * (1.0 - q)
        total = probs.sum()
        probs = probs / total if total > 0 else probs
        out.append(RatingResult(e.key, probs, float(np.dot(RATINGS, probs)), ten_split, q,
                                len(e.prompt)))
    return out


__all__ = ["RatingResult", "RATINGS", "rate"]
