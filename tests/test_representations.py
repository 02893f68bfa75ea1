"""The three value representations on hand-computed arrays, canonical reordering, and stability
with large logits and very negative log-likelihoods."""

import math

import numpy as np
import pytest
from scipy.special import softmax

from valueprobe_jax.probing.parsing import parse_canonical
from valueprobe_jax.probing.representations import p_seq, p_text, p_token, to_canonical


def test_to_canonical():
    out = to_canonical([10.0, 20.0, 30.0, 40.0], [2, 0, 3, 1])
    np.testing.assert_array_equal(out, [20.0, 40.0, 10.0, 30.0])
    batch = to_canonical(np.array([[1, 2, 3], [4, 5, 6]]), [1, 2, 0])
    np.testing.assert_array_equal(batch, [[3, 1, 2], [6, 4, 5]])
    np.testing.assert_array_equal(to_canonical([5, 6, 7], [0, 1, 2]), [5, 6, 7])
    for bad in ([0, 0, 1], [0, 1], [1, 2, 3]):
        with pytest.raises(ValueError, match="display_order"):
            to_canonical([1.0, 2.0, 3.0], bad)


def test_p_token_k3_hand_computed():
    # exp(logits) = [1, 2, 3], exp(space logits) = [2, 1, 1]: total 10
    p = p_token(np.log([1.0, 2.0, 3.0]), np.log([2.0, 1.0, 1.0]))
    np.testing.assert_allclose(p, [0.3, 0.3, 0.4], rtol=1e-12)
    assert p.dtype == np.float64


def test_p_token_k4_display_order_and_no_space():
    bare, space = np.log([1.0, 1.0, 2.0, 4.0]), np.log([0.5, 1.5, 1.0, 1.0])
    # display: [1.5, 2.5, 3, 5] / 12; displayed option i is canonical option order[i]
    order = [2, 0, 3, 1]
    p = p_token(bare, space, order)
    np.testing.assert_allclose(p, np.array([2.5, 5.0, 1.5, 3.0]) / 12, rtol=1e-12)
    np.testing.assert_allclose(p_token(bare), [0.125, 0.125, 0.25, 0.5], rtol=1e-12)


def test_p_token_matches_release_formula():
    rng = np.random.default_rng(0)
    bare, space = rng.normal(size=7) * 3, rng.normal(size=7) * 3
    both = softmax(np.concatenate([bare, space]))  # the release: softmax(logits + logits_space)
    expected = both[:7] + both[7:]
    np.testing.assert_allclose(p_token(bare, space), expected, rtol=1e-12)


def test_p_token_k10_large_logits():
    # exp-ratios of i:i for i = 1..10 on top of 1e4: p_i = 2i / 110
    base = np.log(np.arange(1.0, 11.0))
    p = p_token(base + 1e4, base + 1e4)
    np.testing.assert_allclose(p, np.arange(1.0, 11.0) / 55, rtol=1e-9)
    p = p_token([1e4, -1e4, 0.0], [-np.inf, -np.inf, -np.inf])
    np.testing.assert_allclose(p, [1.0, 0.0, 0.0], atol=0)
    batch = p_token(np.stack([base, base + 5e3]), np.stack([base, base + 5e3]))
    np.testing.assert_allclose(batch[0], batch[1], rtol=1e-9)
    with pytest.raises(ValueError, match="scores"):
        p_token([np.nan, 0.0, 1.0])
    with pytest.raises(ValueError, match="logits_space"):
        p_token([0.0, 1.0], [0.0, 1.0, 2.0])


def test_p_seq_k3_hand_computed():
    # mean log-likelihoods -1, -2, -3: ppl = e, e^2, e^3; p ∝ e^-1, e^-2, e^-3
    p = p_seq([-2.0, -6.0, -3.0], [2, 3, 1])
    z = 1 + math.exp(-1) + math.exp(-2)
    np.testing.assert_allclose(p, [1 / z, math.exp(-1) / z, math.exp(-2) / z], rtol=1e-12)
    np.testing.assert_allclose(p, [0.66524096, 0.24472847, 0.09003057], atol=1e-8)


def test_p_seq_equals_normalised_inverse_perplexity():
    loglik = np.array([-12.3, -4.1, -20.0, -7.7])
    ntok = np.array([5, 2, 9, 3])
    inv_ppl = 1 / np.exp(-loglik / ntok)
    order = [3, 1, 0, 2]
    expected = to_canonical(inv_ppl / inv_ppl.sum(), order)
    np.testing.assert_allclose(p_seq(loglik, ntok, order), expected, rtol=1e-12)


def test_p_seq_very_negative_logliks():
    # per-token means -1e4 and -1e4 - ln 2: every exp underflows, the ratio is 2:1
    p = p_seq([-1e5, -1e5 - 10 * math.log(2)], [10, 10])
    np.testing.assert_allclose(p, [2 / 3, 1 / 3], rtol=1e-9)
    p = p_seq([-1e6, -5e5, -np.inf], [1, 1, 4])
    np.testing.assert_allclose(p, [0.0, 1.0, 0.0], atol=0)
    assert np.all(np.isfinite(p))
    with pytest.raises(ValueError, match="ntokens"):
        p_seq([-1.0, -2.0], [1, 0])


def test_p_text_counts_and_unparseable():
    parsed = [0, 0, 1, None, 3, 3, 3, None, 0, 2]
    # counts [3, 1, 1, 3] / 10, two unparseable add 2 / (10 * 4) to every option
    np.testing.assert_allclose(p_text(parsed, 4), [0.35, 0.15, 0.15, 0.35], rtol=1e-12)
    np.testing.assert_allclose(p_text([None] * 10, 4), [0.25] * 4)
    np.testing.assert_allclose(p_text([2], 3), [0.0, 0.0, 1.0])
    np.testing.assert_allclose(p_text([float("nan"), 1], 2), [0.25, 0.75])
    k10 = p_text([9] * 9 + [None], 10)
    np.testing.assert_allclose(k10, [0.01] * 9 + [0.91], rtol=1e-12)
    assert math.isclose(k10.sum(), 1.0)
    with pytest.raises(ValueError, match="parsed"):
        p_text([0, 4], 4)
    with pytest.raises(ValueError, match="parsed"):
        p_text([], 4)


def test_shuffled_variant_back_to_canonical():
    """A shuffled display: labels A-D over shuffled texts. All three representations land in
    canonical order, so the same preference shows at the same canonical index."""
    canonical = ["Very important", "Rather important", "Not very important", "Not at all important"]
    order = [2, 0, 3, 1]
    labels = list("ABCD")
    shown = [canonical[c] for c in order]  # A: Not very important, B: Very important, ...
    # the model prefers "Very important", displayed as B
    logits = np.array([0.0, 3.0, 1.0, 0.5])
    pt = p_token(logits, logits - 1.0, order)
    assert int(np.argmax(pt)) == 0
    np.testing.assert_allclose(pt, to_canonical(softmax(logits), order), rtol=1e-12)
    ps = p_seq([-8.0, -2.0, -9.0, -7.0], [4, 4, 4, 4], order)
    assert int(np.argmax(ps)) == 0
    gens = ["B", " B. Very important", "Very important", "A", "I am not sure", "(D)"]
    parsed = [parse_canonical(g, labels, shown, order) for g in gens]
    assert parsed == [0, 0, 0, 2, None, 1]
    np.testing.assert_allclose(p_text(parsed, 4),
                               np.array([3, 1, 1, 0]) / 6 + 1 / 24, rtol=1e-12)
