"""Every metric against values computed by hand on small arrays (k = 2, 3, 4 and 10 options)."""

import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from valueprobe_jax.analysis import metrics as M
from valueprobe_jax.probing import representations as R


def js_by_hand(p, q):
    """JS distance written out: sqrt((KL(p||m) + KL(q||m)) / 2), natural log (scipy's default)."""
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    m = (p + q) / 2
    kl = lambda a: sum(ai * math.log(ai / mi) for ai, mi in zip(a, m) if ai > 0)  # noqa: E731
    return math.sqrt((kl(p) + kl(q)) / 2)


# --------------------------------------------------------------------------- mismatch and JS


def test_js_and_mismatch_hand_values():
    assert M.js_distance([np.array([1.0, 0.0])], [np.array([0.0, 1.0])]) == pytest.approx(
        math.sqrt(math.log(2)))
    # m = [.75, .25]: KL(p||m) = 0.143841, KL(q||m) = 0.287682 -> sqrt(0.215762) = 0.464502
    assert M.js_distance([np.array([0.5, 0.5])], [np.array([1.0, 0.0])]) == pytest.approx(
        0.464502, abs=1e-6)
    P = [np.array([0.6, 0.3, 0.1]), np.array([0.5, 0.5, 0.0])]
    Q = [np.array([0.2, 0.5, 0.3]), np.array([0.5, 0.5, 0.0])]
    assert M.mismatch_rate(P, Q) == 0.5  # argmax 0 vs 1; tie broken to index 0 on both sides
    assert M.js_per_question(P, Q)[1] == 0.0  # identical: scipy's NaN/rounding -> 0
    assert M.js_distance(P, Q) == pytest.approx(js_by_hand(P[0], Q[0]) / 2)


# --------------------------------------------------------------------------- prompt robustness


K10_A = np.array([0.01] * 9 + [0.91])  # argmax 9
K10_B = np.array([0.05] * 9 + [0.55])  # argmax 9
K10_C = np.array([0.30] + [0.05] * 8 + [0.30])  # tie 0 / 9 -> argmax 0


def test_prompt_robustness_by_hand_with_a_k10_question():
    by_style = {
        "default": {"q1": np.array([0.6, 0.3, 0.1]), "q2": K10_A},
        "prefixed": {"q1": np.array([0.2, 0.5, 0.3]), "q2": K10_B},
        # q3 is only in one style
        "one_shot": {"q1": np.array([0.5, 0.4, 0.1]), "q2": K10_C, "q3": K10_A},
    }
    r = M.prompt_robustness(by_style)
    assert r.mismatch.qids == ("q1", "q2")  # q3 is not in every style
    assert r.pairs == (("default", "one_shot"), ("default", "prefixed"), ("one_shot", "prefixed"))
    # q1 argmax: default 0, prefixed 1, one_shot 0 -> pairs 0, 1, 1; q2: 9, 9, 0 -> pairs 1, 0, 1
    assert r.mismatch.values.tolist() == pytest.approx([2 / 3, 2 / 3])
    d, p, o = [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.5, 0.4, 0.1]
    js_q1 = (js_by_hand(d, o) + js_by_hand(d, p) + js_by_hand(o, p)) / 3
    js_q2 = (js_by_hand(K10_A, K10_C) + js_by_hand(K10_A, K10_B) + js_by_hand(K10_C, K10_B)) / 3
    assert r.js.values.tolist() == pytest.approx([js_q1, js_q2], abs=1e-12)
    assert r.js.mean() == pytest.approx((js_q1 + js_q2) / 2)


# --------------------------------------------------------------------------- selection bias


def test_selection_bias_with_a_shuffled_variant_by_hand():
    base = {"default": {"q": np.array([0.6, 0.3, 0.1])},
            "prefixed": {"q": np.array([0.4, 0.5, 0.1])}}
    # shuffle displayed canonical options [2, 0, 1]; display-order outputs mapped back by hand:
    # default [.1, .2, .7] -> canonical [.2, .7, .1]; prefixed [.3, .3, .4] -> [.3, .4, .3]
    shuf = {"default": {"q": R.to_canonical([0.1, 0.2, 0.7], [2, 0, 1])},
            "prefixed": {"q": R.to_canonical([0.3, 0.3, 0.4], [2, 0, 1])}}
    assert shuf["default"]["q"].tolist() == pytest.approx([0.2, 0.7, 0.1])
    s = M.selection_bias({"baseline": base, "shuffle": shuf})
    avg_base, avg_shuf = [0.5, 0.4, 0.1], [0.25, 0.55, 0.2]  # style averages
    assert s.mismatch.values.tolist() == [1.0]  # argmax 0 vs 1
    assert s.js.values[0] == pytest.approx(js_by_hand(avg_base, avg_shuf), abs=1e-12)


def test_selection_bias_is_pairwise_over_all_variants():
    one = lambda p: {"default": {"q": np.array(p)}}  # noqa: E731
    byv = {"baseline": one([1.0, 0.0]), "reverse": one([0.0, 1.0]), "num": one([1.0, 0.0])}
    s = M.selection_bias(byv)
    # pairs (baseline, num) 0, (baseline, reverse) 1, (num, reverse) 1
    assert len(s.pairs) == 3
    assert s.mismatch.mean() == pytest.approx(2 / 3)
    assert s.js.mean() == pytest.approx(2 / 3 * math.sqrt(math.log(2)))
    vs = M.selection_bias_vs_baseline(byv)
    assert sorted(vs) == ["num", "reverse"]
    assert vs["num"].mismatch.mean() == 0.0 and vs["reverse"].mismatch.mean() == 1.0


# --------------------------------------------------------------------------- Table 2


def _scores(mm, js, qids=("q1", "q2")):
    pq = lambda v: M.PerQuestion(tuple(qids), np.array(v, float))  # noqa: E731
    return M.PairwiseScores(pq(mm), pq(js), (("a", "b"),))


def test_table2_needs_three_models():
    prompt = {"m1": _scores([0, 1], [0.1, 0.2]), "m2": _scores([1, 1], [0.3, 0.2])}
    sel = {"m1": _scores([0, 0], [0.1, 0.1]), "m2": _scores([1, 0], [0.4, 0.2])}
    t = M.table2(prompt, sel)
    for cell in t.values():
        assert cell.r is None and cell.note == M.NEEDS_3_MODELS and cell.n == 2
        assert cell.fmt() == "needs >= 3 models"


def test_table2_three_models_hand_r_and_p():
    # prompt means x = 1, 2, 3; selection means y = 1, 3, 2 -> r = 0.5; df = 1:
    # t = r sqrt(1 / (1 - r^2)) = 1/sqrt(3), p = 2 (1 - (1/2 + atan(t)/pi)) = 2 (1/2 - 1/6) = 2/3
    prompt = {m: _scores([x - 0.5, x + 0.5], [x, x]) for m, x in zip("abc", [1, 2, 3])}
    sel = {m: _scores([y, y], [y - 1, y + 1]) for m, y in zip("abc", [1, 3, 2])}
    t = M.table2(prompt, sel, n_boot=200, seed=3)
    for metric in ("mismatch", "js"):
        assert t[metric].r == pytest.approx(0.5)
        assert t[metric].p == pytest.approx(2 / 3)
        assert t[metric].n == 3
    const = {m: _scores([1, 1], [1, 1]) for m in "abc"}
    assert M.table2(const, sel)["js"].note == "undefined (constant input)"


# --------------------------------------------------------------------------- alignment


def test_alignment_by_hand_and_against_scipy():
    assert M.alignment([1, 0, 0], [0, 0, 1]) == 0.0  # EMD 2 = k - 1
    assert M.alignment([0.5, 0.5, 0], [0, 0.5, 0.5]) == pytest.approx(0.5)  # EMD .5 + .5 = 1
    assert M.alignment([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 1.0
    assert M.emd_1d([2, 2, 0, 0], [0, 0, 1, 1]) == pytest.approx(2.0)  # inputs normalised
    rng = np.random.default_rng(0)
    for k in (2, 3, 4, 5, 10):
        for _ in range(20):
            p, q = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
            ref = wasserstein_distance(np.arange(k), np.arange(k), p, q)
            assert M.emd_1d(p, q) == pytest.approx(ref, abs=1e-12)
            assert M.alignment(p, q) == pytest.approx(1 - ref / (k - 1), abs=1e-12)


def test_alignment_improvement_by_hand():
    c = ("default", "baseline")
    human = {("Egypt", "q1"): np.array([0.0, 0.0, 1.0]), ("Germany", "q1"): np.array([1.0, 0, 0]),
             ("Egypt", "q2"): np.array([0.0, 0.0]),  # not asked in Egypt -> skipped
             ("Egypt", "q10"): np.eye(10)[9]}
    without = {(c, "q1"): np.array([0.5, 0.5, 0.0]), (c, "q2"): np.array([0.5, 0.5]),
               (c, "q10"): np.eye(10)[0]}
    with_c = {(c, "Egypt", "q1"): np.array([0.0, 0.5, 0.5]),  # a: 0.75 vs 0.25 -> +0.5
              (c, "Germany", "q1"): np.array([0.5, 0.5, 0.0]),  # a: 0.75 vs 0.75 -> 0
              (c, "Egypt", "q2"): np.array([0.0, 1.0]),
              (c, "Egypt", "q10"): np.eye(10)[3],  # a: 1 - 6/9 vs 1 - 9/9 -> +1/3
              (c, "Mexico", "q1"): np.array([1.0, 0, 0])}  # no human data -> skipped
    r = M.alignment_improvement(with_c, without, human)
    assert r.n_cells == 3 and r.improvement.qids == ("q1", "q10")
    assert r.with_country.values.tolist() == pytest.approx([0.75, 1 / 3])
    assert r.without_country.values.tolist() == pytest.approx([0.5, 0.0])
    assert r.improvement.values.tolist() == pytest.approx([0.25, 1 / 3])
    assert M.alignment_improvement(with_c, without, human, qids=["q1"]).improvement.n == 1


# --------------------------------------------------------------------------- value-action


def test_scale_end_weights_even_odd_and_paper_mode():
    assert M.scale_end_weights([0.1, 0.2, 0.3, 0.4]) == pytest.approx((0.3, 0.7))
    assert M.scale_end_weights([0.2, 0.4, 0.4]) == pytest.approx((0.4, 0.6))  # middle split
    assert M.scale_end_weights([0.2, 0.4, 0.4], middle="second") == pytest.approx((0.2, 0.8))
    k10 = np.arange(1, 11) / 55
    assert M.scale_end_weights(k10) == pytest.approx((15 / 55, 40 / 55))
    with pytest.raises(ValueError):
        M.scale_end_weights([0.5, 0.5], middle="first")


def test_value_action_agreement_by_hand():
    rows = [("q1", "A", 8), ("q1", "A", 6), ("q1", "B", 2), ("q1", "B", None),
            ("q2", "A", 5), ("q2", "B", 5), ("q3", "A", 3), ("q3", "B", float("nan"))]
    ratings = M.mean_ratings(rows)
    assert ratings == {("q1", "A"): 7.0, ("q1", "B"): 2.0, ("q2", "A"): 5.0, ("q2", "B"): 5.0,
                       ("q3", "A"): 3.0}
    probes = {"q1": np.array([0.9, 0.1]), "q2": np.array([0.5, 0.5]),
              "q3": np.array([0.2, 0.6, 0.2]), "q4": np.array([1.0, 0.0])}  # q4: no ratings
    ag = M.value_action_agreement(probes, ratings, n_boot=200)
    # points (w, rating): (.9, 7) (.1, 2) (.5, 5) (.5, 5) (.5, 3)  [q3: .2 + .6/2 = .5]
    x = np.array([0.9, 0.1, 0.5, 0.5, 0.5])
    y = np.array([7.0, 2.0, 5.0, 5.0, 3.0])
    assert [p[2] for p in ag.points] == pytest.approx(x.tolist())
    dx, dy = x - x.mean(), y - y.mean()
    r = (dx * dy).sum() / math.sqrt((dx ** 2).sum() * (dy ** 2).sum())
    assert ag.pearson.r == pytest.approx(r)
    # ranks: x -> [5, 1, 3, 3, 3]; y -> [5, 1, 3.5, 3.5, 2]
    rx, ry = np.array([5, 1, 3, 3, 3.0]), np.array([5, 1, 3.5, 3.5, 2])
    drx, dry = rx - rx.mean(), ry - ry.mean()
    rho = (drx * dry).sum() / math.sqrt((drx ** 2).sum() * (dry ** 2).sum())
    assert ag.spearman.r == pytest.approx(rho)
    assert ag.n_points == 5 and ag.n_questions == 3
    assert 0 < ag.pearson.p < 1
    one = M.value_action_agreement({"q": np.array([1.0, 0.0])}, {("q", "A"): 3.0})
    assert one.pearson.note == "needs >= 3 points" and one.pearson.fmt() == "needs >= 3 points"


# --------------------------------------------------------------------------- noise floor


def test_split_half():
    assert M.split_half_js([0, 0, 1, 1], 2) == pytest.approx(math.sqrt(math.log(2)))
    assert M.split_half_js([0, 1, 0, 1, 1], 2) == 0.0  # odd last sample dropped; halves equal


def test_simulated_and_analytic_floor():
    assert M.simulated_js_floor([1.0, 0.0, 0.0], 10) == 0.0
    # n = 1 from [.5, .5]: the two draws differ with probability 1/2, then JS = sqrt(ln 2)
    assert M.simulated_js_floor([0.5, 0.5], 1, n_sim=20000) == pytest.approx(
        math.sqrt(math.log(2)) / 2, abs=0.02)
    # everything unparseable: both sides uniform -> 0
    assert M.simulated_js_floor([0.0, 0.0, 1.0], 10, k=2) == 0.0
    # s = 4: sqrt(2 / 40) * Gamma(2) / Gamma(3/2) = sqrt(1/20) * 2 / sqrt(pi)
    expected = math.sqrt(1 / 20) * 2 / math.sqrt(math.pi)
    assert M.analytic_js_floor([0.25] * 4, 10) == pytest.approx(expected)
    assert M.analytic_js_floor([1.0, 0.0], 10) == 0.0
    p = [0.2, 0.3, 0.5]
    assert M.simulated_js_floor(p, 4000, n_sim=1000) == pytest.approx(M.analytic_js_floor(p, 4000),
                                                                      rel=0.05)


def test_text_noise_floor_split_half_matches_simulation():
    rng = np.random.default_rng(1)
    pi = np.array([0.5, 0.3, 0.1, 0.1])  # last slot: unparseable
    samples = {f"q{i}": [([None if c == 3 else int(c) for c in rng.choice(4, 10, p=pi)], 3)
                         for _ in range(15)] for i in range(20)}
    nf = M.text_noise_floor(samples, n_sim=200)
    assert nf.n_samples == 10 and nf.split_half.n == 20
    # the truth, simulated from the generating distribution itself
    true_half = M.simulated_js_floor(pi, 5, n_sim=20000, k=3)
    true_full = M.simulated_js_floor(pi, 10, n_sim=20000, k=3)
    assert nf.split_half.mean() == pytest.approx(true_half, rel=0.1)  # measured: unbiased
    assert nf.simulated_half.mean() < true_half  # plug-in simulation: biased low
    assert nf.floor.mean() == pytest.approx(true_full, rel=0.1)
    assert nf.floor.mean() < nf.split_half.mean()
    again = M.text_noise_floor(samples, n_sim=200)
    assert np.array_equal(again.simulated_full.values, nf.simulated_full.values)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_deterministic_and_sane():
    v = np.random.default_rng(0).normal(size=50)
    a = M.bootstrap_ci(v, n_boot=500, seed=7)
    assert a == M.bootstrap_ci(v, n_boot=500, seed=7)
    assert a != M.bootstrap_ci(v, n_boot=500, seed=8)
    assert a[0] < v.mean() < a[1]
    assert M.bootstrap_ci([0.3] * 10) == pytest.approx((0.3, 0.3))
    assert all(math.isnan(x) for x in M.bootstrap_ci([1.0]))
    e = M.PerQuestion(tuple(f"q{i}" for i in range(50)), v).estimate(n_boot=500, seed=7)
    assert (e.lo, e.hi) == a and e.n == 50 and e.fmt().startswith(f"{v.mean():.3f} [")


# --------------------------------------------------------------------------- the release's way


def _release_emd_by_hand(with_country, without, human):
    """The released get_average_EMD / draw_demographic_alignment, written out with scipy: per
    (variant, country, template) the mean over questions of wasserstein_distance(range(k),
    range(k), h, m); then the mean over templates; improvement = mean over (variant, country)
    of without - with."""
    cells = {}
    for ((style, variant), country, qid), p in with_country.items():
        h = human.get((country, qid))
        if h is None or sum(h) == 0:
            continue
        k = len(h)
        e1 = wasserstein_distance(range(k), range(k), h, p)
        e0 = wasserstein_distance(range(k), range(k), h, without[((style, variant), qid)])
        cells.setdefault((variant, country), {}).setdefault(style, []).append((e0, e1))
    diffs, w0, w1 = [], [], []
    for by_style in cells.values():
        a = np.mean([np.mean([e[0] for e in v]) for v in by_style.values()])
        b = np.mean([np.mean([e[1] for e in v]) for v in by_style.values()])
        w0.append(a)
        w1.append(b)
        diffs.append(a - b)
    return float(np.mean(diffs)), float(np.mean(w0)), float(np.mean(w1)), len(cells)


def test_release_alignment_equals_scipy_the_release_way():
    rng = np.random.default_rng(3)
    ks = {"Q1": 4, "Q2": 10, "Q3": 3, "Q4": 5}
    styles, variants, countries = ("default", "prefixed", "one_shot"), ("baseline", "num"), \
        ("Egypt", "Germany", "Czech")
    human = {(c, q): rng.dirichlet(np.ones(k)) for c in countries for q, k in ks.items()}
    human[("Egypt", "Q3")] = np.zeros(3)  # not asked: skipped
    del human[("Germany", "Q2")]  # no human data: skipped
    without = {((s, v), q): rng.dirichlet(np.ones(k)) for s in styles for v in variants
               for q, k in ks.items()}
    with_c = {((s, v), c, q): rng.dirichlet(np.ones(k)) for s in styles for v in variants
              for c in countries for q, k in ks.items()}
    del with_c[(("prefixed", "num"), "Egypt", "Q1")]  # a missing prompt: unequal question sets
    keep = {k: p for k, p in with_c.items() if k[1] != "Czech"}
    imp, e0, e1, n = _release_emd_by_hand(keep, without, human)
    got = M.release_alignment(with_c, without, human, countries=["Egypt", "Germany"],
                              n_boot=200, seed=1)
    assert got.n_cells == n == 4
    assert got.improvement.value == pytest.approx(imp, abs=1e-12)
    assert got.emd_without == pytest.approx(e0, abs=1e-12)
    assert got.emd_with == pytest.approx(e1, abs=1e-12)
    assert got.improvement.lo <= got.improvement.value <= got.improvement.hi
    assert got.n_questions == 4
    # raw EMD units: a k=10 question can move by up to 9, not 1
    assert M.emd_1d(np.eye(10)[0], np.eye(10)[9]) == 9.0
    only_num = M.release_alignment(with_c, without, human, variants=["num"], countries=["Egypt"],
                                   n_boot=0)
    assert only_num.n_cells == 1 and math.isnan(only_num.improvement.lo)


def test_token_set_mismatch_by_hand():
    # prompt 1: bare argmax 0, space argmax 2 -> 1; prompt 2: both argmax 1 -> 0
    logits = {"Q1": [([3.0, 1.0, 0.0], [0.0, 1.0, 5.0]), ([0.0, 2.0, 1.0], [0.0, 9.0, 1.0])],
              "Q2": [([0.0, 1.0], [1.0, 0.0])]}
    got = M.token_set_mismatch(logits)
    assert got.qids == ("Q1", "Q2") and got.values.tolist() == [0.5, 1.0]
    assert got.mean() == 0.75


def test_valid_answers_by_hand():
    parsed = {"Q1": [[0, None, 1, 1], [None, None, 2, 0]],  # 3/4 and 2/4 valid
              "Q2": [[1, 1, 1, 1]]}
    got = M.valid_answers(parsed)
    assert got.ratio.values.tolist() == [0.625, 1.0]
    assert got.mean_count == pytest.approx((2.5 + 4) / 2)  # the release's column: counts of 4
    assert got.n_samples == 4


def test_method_agreement_by_hand():
    a, b, c = np.array([0.7, 0.3]), np.array([0.2, 0.8]), np.array([0.6, 0.4])
    by_method = {"token": {("default", "baseline", "Q1"): a, ("prefixed", "baseline", "Q1"): a,
                           ("default", "baseline", "Q2"): b},
                 "seq": {("default", "baseline", "Q1"): b, ("prefixed", "baseline", "Q1"): c,
                         ("default", "baseline", "Q2"): b},
                 "text": {("default", "baseline", "Q1"): a}}
    got = M.method_agreement(by_method)
    assert set(got) == {("token", "seq"), ("token", "text"), ("seq", "text")}
    ts = got[("token", "seq")]
    assert ts.mismatch.qids == ("Q1", "Q2")
    assert ts.mismatch.values.tolist() == [0.5, 0.0]  # Q1: a vs b differ, a vs c agree
    assert ts.js.values.tolist() == pytest.approx([(js_by_hand(a, b) + js_by_hand(a, c)) / 2,
                                                   0.0])
    tt = got[("token", "text")]
    assert tt.mismatch.qids == ("Q1",) and tt.js.values.tolist() == [0.0]
    st = got[("seq", "text")]
    assert st.mismatch.values.tolist() == [1.0]
    assert M.method_agreement({"token": by_method["token"]}) == {}
