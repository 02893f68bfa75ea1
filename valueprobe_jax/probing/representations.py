"""The paper's three value representations: distributions over a question's options.

Inputs arrive in *display* order (the order and labels a variant showed); every output is in
*canonical* order (the option's position in the original question), so distributions from
different variants and the human data line up. `display_order[i]` is the canonical index of
the i-th displayed option. Pure numpy in float64; softmaxes are taken in log space so that
logits of 1e4 or log-likelihoods of -1e5 neither overflow nor underflow to 0/0.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["to_canonical", "p_token", "p_seq", "p_text"]


def _check_order(display_order: Sequence[int], k: int) -> np.ndarray:
    order = np.asarray(display_order, dtype=np.int64)
    if order.shape != (k,) or sorted(order.tolist()) != list(range(k)):
        raise ValueError(
            f"display_order: {list(display_order)!r} is not a permutation of 0..{k - 1}")
    return order


def to_canonical(values_in_display_order, display_order: Sequence[int]) -> np.ndarray:
    """Reorder the last axis from display order to canonical order:
    out[..., display_order[i]] = values[..., i]."""
    values = np.asarray(values_in_display_order)
    order = _check_order(display_order, values.shape[-1])
    out = np.empty_like(values)
    out[..., order] = values
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the max; entries of -inf get probability 0."""
    z = np.asarray(z, dtype=np.float64)
    if np.isnan(z).any() or np.isposinf(z).any():
        raise ValueError("scores: NaN or +inf among the option scores")
    top = np.max(z, axis=-1, keepdims=True)
    if np.isneginf(top).any():
        raise ValueError("scores: every option score is -inf")
    e = np.exp(z - top)
    return e / np.sum(e, axis=-1, keepdims=True)


def p_token(logits, logits_space=None, display_order: Optional[Sequence[int]] = None) -> np.ndarray:
    """Token method: softmax over the 2k label logits (bare label "A" and space-prefixed " A",
    both in display order, last axis k), then the two entries of each option summed.
    Without `logits_space`, softmax over the k bare-label logits (the release's
    use_option_space=False). Returned in canonical order ([..., k], float64)."""
    logits = np.asarray(logits, dtype=np.float64)
    k = logits.shape[-1]
    if logits_space is None:
        p = _softmax(logits)
    else:
        logits_space = np.asarray(logits_space, dtype=np.float64)
        if logits_space.shape != logits.shape:
            raise ValueError(
                f"logits_space: shape {logits_space.shape} differs from logits {logits.shape}")
        both = _softmax(np.concatenate([logits, logits_space], axis=-1))
        p = both[..., :k] + both[..., k:]
    return p if display_order is None else to_canonical(p, display_order)


def p_seq(loglik, ntokens, display_order: Optional[Sequence[int]] = None) -> np.ndarray:
    """Sequence method: p_i = ppl_i^-1 / sum_j ppl_j^-1 with ppl_i = exp(-loglik_i / ntokens_i)
    (loglik: summed log-likelihood of option i's whole continuation; display order, last axis k).
    Equal to a softmax of the mean per-token log-likelihoods, computed so. Canonical order."""
    loglik = np.asarray(loglik, dtype=np.float64)
    n = np.asarray(ntokens, dtype=np.float64)
    if np.any(n <= 0) or not np.all(np.isfinite(n)):
        raise ValueError(f"ntokens: every option needs a positive token count, got {n.tolist()!r}")
    p = _softmax(loglik / n)
    return p if display_order is None else to_canonical(p, display_order)


def p_text(parsed: Sequence[Optional[int]], k: int) -> np.ndarray:
    """Text method: parsed holds one canonical option index (or None, unparseable) per sample;
    p_i = count_i / N + n_invalid / (N k), i.e. an unparseable sample (None or NaN, as a
    nullable column reads back) adds 1/k to every option
    (the release's compensation (1 - sum)/k, which is never negative here)."""
    if k < 1:
        raise ValueError(f"k: a question needs at least one option, got {k}")
    n = len(parsed)
    if n == 0:
        raise ValueError("parsed: no samples to count")
    counts = np.zeros(k, dtype=np.float64)
    invalid = 0
    for x in parsed:
        if x is None or (isinstance(x, (float, np.floating)) and np.isnan(x)):
            invalid += 1
            continue
        i = int(x)
        if not 0 <= i < k or i != x:
            raise ValueError(f"parsed: option index {x!r} outside 0..{k - 1}")
        counts[i] += 1
    return (counts + invalid / k) / n
