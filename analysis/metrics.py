"""Robustness and expressiveness metrics over value representations (numpy and scipy only).

Every distribution handed to this module is a 1-D array over a question's options in *canonical*
order (the option's position in the original question, whatever the variant displayed), so
distributions of different styles, variants, countries and the human answers are comparable
index by index. Inputs are plain mappings (``{qid: p}``, ``{(country, qid): q}``), not Parquet
rows: analysis/results.py turns result files into these mappings.

Every metric is kept *per question* (``PerQuestion``): its mean is the reported number and the
questions are the unit of the bootstrap that gives the 95% confidence interval.

Decisions (the paper's released code, src/eval_utils.py, is followed unless said otherwise):
- mismatch: argmax differs; ``np.argmax`` breaks ties by the lowest canonical index.
- JS distance: ``scipy.spatial.distance.jensenshannon`` with its default base (e); a NaN (scipy's
  rounding on identical inputs) counts as 0, as the paper did.
- prompt robustness: all pairs of styles on the same questions; each question's pair values are
  averaged, then the questions (equal to the paper's mean over pairs of per-pair means).
- selection bias: each question's distribution is averaged over the styles first, then all pairs
  of variants (the paper's code compares every pair i < j); ``selection_bias_vs_baseline`` gives
  the per-variant breakdown against the baseline as a diagnostic.
- alignment: a = 1 - EMD(p, q) / (k - 1), EMD with ground distance |i - j| = sum |CDF_p - CDF_q|;
  both inputs are normalised first (as scipy.stats.wasserstein_distance does).
- value-action agreement: an odd middle option's mass is split equally between the two ends
  (``middle="split"``); ``middle="second"`` reproduces the paper's code (``p[:k//2]``,
  ``p[k//2:]``: the middle option goes to the B end). Ratings are averaged per (question, action)
  over scenarios and templates (the paper's aggregation); unparsed ratings are dropped (the paper's
  code averaged them in as -1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from valueprobe_jax.probing.representations import p_text
NEEDS_3_MODELS = "needs >= 3 models"
DEFAULT_N_BOOT = 1000
DEFAULT_SEED = 0


# ----------------------------------------------------------------------------- distributions


def as_distribution(p: Sequence[float] | np.ndarray, name: str = "distribution") -> np.ndarray:
    """A validated float64 probability vector (non-negative, finite, positive sum), normalised."""
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D vector, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name}: entries must be finite and >= 0, got {a.tolist()}")
    s = a.sum()
    if s <= 0:
        raise ValueError(f"{name}: the probabilities sum to 0")
    return a / s


# ----------------------------------------------------------------------------- per question


@dataclass(frozen=True)
class Estimate:
    """A reported number with its bootstrap 95% CI over questions (lo/hi NaN when undefined)."""

    value: float
    lo: float
    hi: float
    n: int

    def fmt(self, digits: int = 3) -> str:
        if not np.isfinite(self.value):
            return "n/a"
        if not (np.isfinite(self.lo) and np.isfinite(self.hi)):
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


@dataclass(frozen=True)
class PerQuestion:
    """One metric's value per question; its mean is the reported figure."""

    qids: tuple[str, ...]
    values: np.ndarray

    @property
    def n(self) -> int:
        return len(self.qids)

    def mean(self) -> float:
        return float(np.mean(self.values)) if self.n else math.nan

    def estimate(self, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Estimate:
        lo, hi = bootstrap_ci(self.values, n_boot=n_boot, seed=seed)
        return Estimate(self.mean(), lo, hi, self.n)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.qids, self.values.tolist()))


def _per_question(values: Mapping[str, float]) -> PerQuestion:
    qids = tuple(sorted(values))
    return PerQuestion(qids, np.array([values[q] for q in qids], dtype=np.float64))


# ----------------------------------------------------------------------------- bootstrap


def bootstrap_indices(n: int, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> np.ndarray:
    """[n_boot, n] question indices drawn with replacement (fixed seed: repeatable reports)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n))


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, n_boot: int = DEFAULT_N_BOOT,
                 seed: int = DEFAULT_SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean of per-question ``values`` (NaN, NaN for fewer than 2 values)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or n_boot < 1:
        return math.nan, math.nan
    means = v[bootstrap_indices(v.size, n_boot, seed)].mean(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return float(lo), float(hi)


def bootstrap_stat_ci(n: int, stat: Callable[[np.ndarray], float], *,
                      n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of any statistic of a resampled question index set (NaN draws ignored)."""
    if n < 2 or n_boot < 1:
        return math.nan, math.nan
    draws = np.array([stat(idx) for idx in bootstrap_indices(n, n_boot, seed)], dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size < max(10, n_boot // 10):
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(draws, [a, 1.0 - a])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- mismatch and JS


def mismatch_per_question(P: Sequence[np.ndarray], Q: Sequence[np.ndarray]) -> np.ndarray:
    """1.0 where the argmax option differs between aligned distributions P[i] and Q[i], else 0.0."""
    if len(P) != len(Q):
        raise ValueError(f"mismatch: {len(P)} vs {len(Q)} distributions")
    return np.array([float(np.argmax(p) != np.argmax(q)) for p, q in zip(P, Q)], dtype=np.float64)


def js_per_question(P: Sequence[np.ndarray], Q: Sequence[np.ndarray]) -> np.ndarray:
    """Jensen-Shannon distance (scipy, base e) between aligned distributions; NaN counts as 0."""
    if len(P) != len(Q):
        raise ValueError(f"JS distance: {len(P)} vs {len(Q)} distributions")
    out = np.empty(len(P), dtype=np.float64)
    for i, (p, q) in enumerate(zip(P, Q)):
        if len(p) != len(q):
            raise ValueError(f"JS distance: distribution {i} has {len(p)} vs {len(q)} options")
        with np.errstate(invalid="ignore"):
            d = jensenshannon(p, q)
        out[i] = 0.0 if np.isnan(d) else float(d)
    return out


def mismatch_rate(P: Sequence[np.ndarray], Q: Sequence[np.ndarray]) -> float:
    """Fraction of aligned questions whose argmax option differs."""
    return float(np.mean(mismatch_per_question(P, Q)))


def js_distance(P: Sequence[np.ndarray], Q: Sequence[np.ndarray]) -> float:
    """Mean Jensen-Shannon distance over aligned questions."""
    return float(np.mean(js_per_question(P, Q)))


@dataclass(frozen=True)
class PairwiseScores:
    """Mismatch and JS distance per question, each averaged over the compared condition pairs."""

    mismatch: PerQuestion
    js: PerQuestion
    pairs: tuple[tuple[str, str], ...]

    @property
    def n(self) -> int:
        return self.mismatch.n


def pairwise_scores(by_condition: Mapping[str, Mapping[str, np.ndarray]],
                    conditions: Sequence[str] | None = None) -> PairwiseScores:
    """All unordered pairs of conditions, on the questions every condition has.

    ``by_condition``: condition (a style, a variant, ...) -> qid -> canonical distribution.
    """
    conds = [c for c in (conditions or sorted(by_condition)) if c in by_condition]
    if len(conds) < 2:
        raise ValueError(f"pairwise comparison needs >= 2 conditions, got {conds}")
    qids = sorted(set.intersection(*(set(by_condition[c]) for c in conds)))
    pairs = tuple(itertools.combinations(conds, 2))
    mm = np.zeros(len(qids))
    js = np.zeros(len(qids))
    for a, b in pairs:
        P = [by_condition[a][q] for q in qids]
        Q = [by_condition[b][q] for q in qids]
        mm += mismatch_per_question(P, Q)
        js += js_per_question(P, Q)
    t = tuple(qids)
    return PairwiseScores(PerQuestion(t, mm / len(pairs)), PerQuestion(t, js / len(pairs)), pairs)


def prompt_robustness(by_style: Mapping[str, Mapping[str, np.ndarray]]) -> PairwiseScores:
    """Prompt-style robustness of one (model, method, variant): pairwise over the styles."""
    return pairwise_scores(by_style)


def average_over_styles(by_style: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each question's distribution averaged over the styles that all have it."""
    styles = sorted(by_style)
    qids = sorted(set.intersection(*(set(by_style[s]) for s in styles))) if styles else []
    return {q: np.mean([by_style[s][q] for s in styles], axis=0) for q in qids}


def selection_bias(by_variant: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
                   variants: Sequence[str] | None = None) -> PairwiseScores:
    """Selection bias of one (model, method): style-averaged distributions, pairwise over variants.

    ``by_variant``: variant -> style -> qid -> canonical distribution. Only styles present in every
    compared variant are averaged, so each variant's average is over the same prompts.
    """
    names = [v for v in (variants or sorted(by_variant)) if v in by_variant]
    styles = sorted(set.intersection(*(set(by_variant[v]) for v in names))) if names else []
    averaged = {v: average_over_styles({s: by_variant[v][s] for s in styles}) for v in names}
    return pairwise_scores(averaged, names)


def selection_bias_vs_baseline(by_variant: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
                               baseline: str = "baseline") -> dict[str, PairwiseScores]:
    """Diagnostic breakdown: each variant's style-averaged distributions against the baseline's."""
    out = {}
    for v in sorted(by_variant):
        if v != baseline and baseline in by_variant:
            out[v] = selection_bias({baseline: by_variant[baseline], v: by_variant[v]},
                                    [baseline, v])
    return out


# ----------------------------------------------------------------------------- Table 2


@dataclass(frozen=True)
class Correlation:
    """A correlation with its p-value and bootstrap CI; ``note`` explains a missing value."""

    r: float | None
    p: float | None
    n: int
    lo: float = math.nan
    hi: float = math.nan
    note: str = ""

    def fmt(self, digits: int = 3) -> str:
        if self.r is None or not np.isfinite(self.r):
            return self.note or "n/a"
        s = f"{self.r:.{digits}f} (p={self.p:.3g})"
        if np.isfinite(self.lo) and np.isfinite(self.hi):
            s += f" [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"
        return s


def _pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    res = stats.pearsonr(x, y)
    return float(res.statistic), float(res.pvalue)


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def _fast_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r without a p-value (bootstrap inner loop)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def table2(prompt: Mapping[str, PairwiseScores], selection: Mapping[str, PairwiseScores], *,
           n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> dict[str, Correlation]:
    """Across models: Pearson r (p-value) of prompt robustness vs selection bias, per metric.

    ``prompt`` / ``selection``: model -> scores of one method. Returns {"mismatch": ..., "js": ...}.
    With fewer than 3 models the cells carry ``NEEDS_3_MODELS`` instead of a number (with 2 models
    r is always +-1). The CI resamples the questions every model has, jointly for all models.
    """
    models = sorted(set(prompt) & set(selection))
    out = {}
    for metric in ("mismatch", "js"):
        if len(models) < 3:
            out[metric] = Correlation(None, None, len(models), note=NEEDS_3_MODELS)
            continue
        x = np.array([getattr(prompt[m], metric).mean() for m in models])
        y = np.array([getattr(selection[m], metric).mean() for m in models])
        r, p = _pearson(x, y)
        if not np.isfinite(r):
            out[metric] = Correlation(None, None, len(models), note="undefined (constant input)")
            continue
        px = [getattr(prompt[m], metric).as_dict() for m in models]
        sy = [getattr(selection[m], metric).as_dict() for m in models]
        common = sorted(set.intersection(*(set(d) for d in px + sy)))
        xs = np.array([[d[q] for q in common] for d in px])
        ys = np.array([[d[q] for q in common] for d in sy])
        lo, hi = bootstrap_stat_ci(
            len(common), lambda idx: _fast_r(xs[:, idx].mean(1), ys[:, idx].mean(1)),
            n_boot=n_boot, seed=seed)
        out[metric] = Correlation(r, p, len(models), lo, hi)
    return out


# ----------------------------------------------------------------------------- alignment


def emd_1d(p: Sequence[float], q: Sequence[float]) -> float:
    """Earth mover's distance on options 0..k-1 with cost |i - j|: sum of |CDF_p - CDF_q|."""
    a = as_distribution(p, "p")
    b = as_distribution(q, "q")
    if a.size != b.size:
        raise ValueError(f"EMD: {a.size} vs {b.size} options")
    return float(np.abs(np.cumsum(a) - np.cumsum(b))[:-1].sum())


def alignment(p: Sequence[float], q: Sequence[float]) -> float:
    """a = 1 - EMD(p, q) / (k - 1): 1 when identical, 0 when all mass sits at opposite ends."""
    k = len(p)
    if k < 2:
        raise ValueError("alignment needs >= 2 options")
    return 1.0 - emd_1d(p, q) / (k - 1)


@dataclass(frozen=True)
class AlignmentResult:
    """Alignment with the human distribution per question, with and without the country prompt."""

    with_country: PerQuestion
    without_country: PerQuestion
    improvement: PerQuestion
    n_cells: int  # matched (condition, country, question) comparisons


def alignment_improvement(with_country: Mapping[tuple[Hashable, str, str], np.ndarray],
                          without_country: Mapping[tuple[Hashable, str], np.ndarray],
                          human: Mapping[tuple[str, str], np.ndarray],
                          qids: Iterable[str] | None = None) -> AlignmentResult:
    """Improvement = a(p_country, q_country) - a(p_none, q_country) for one (model, method).

    ``with_country``: (condition, country, qid) -> p, condition being e.g. (style, variant);
    ``without_country``: (condition, qid) -> p of the same prompt without a country;
    ``human``: (country, qid) -> q (WVS-7 answers, canonical order). Human vectors summing to 0
    (question not asked in that country) are skipped, as the paper did; ``qids`` optionally keeps
    only some questions (the paper used ordinal ones). Each question's cells are averaged over
    conditions and countries, then questions are averaged (equal to the paper's order of averaging
    when every cell is present).
    """
    keep = set(qids) if qids is not None else None
    a_c: dict[str, list[float]] = {}
    a_0: dict[str, list[float]] = {}
    n = 0
    for (cond, country, qid), p in with_country.items():
        if keep is not None and qid not in keep:
            continue
        q = human.get((country, qid))
        p0 = without_country.get((cond, qid))
        if q is None or p0 is None or float(np.sum(q)) <= 0:
            continue
        if len(q) != len(p):
            raise ValueError(f"human distribution ({country}, {qid}) has {len(q)} options, "
                             f"the model's {len(p)}")
        a_c.setdefault(qid, []).append(alignment(p, q))
        a_0.setdefault(qid, []).append(alignment(p0, q))
        n += 1
    wc = _per_question({k: float(np.mean(v)) for k, v in a_c.items()})
    wo = _per_question({k: float(np.mean(v)) for k, v in a_0.items()})
    return AlignmentResult(wc, wo, PerQuestion(wc.qids, wc.values - wo.values), n)


# ----------------------------------------------------------------------------- value-action


def scale_end_weights(p: Sequence[float], middle: str = "split") -> tuple[float, float]:
    """(weight of the first-option end, weight of the last-option end) of a canonical distribution.

    Options split into the first and second half of the canonical order; with an odd k the middle
    option's mass is split equally (``middle="split"``) or given to the second half as the paper's
    code did (``middle="second"``).
    """
    if middle not in ("split", "second"):
        raise ValueError(f"middle: expected 'split' or 'second', got {middle!r}")
    a = as_distribution(p)
    k = a.size
    h = k // 2
    if k % 2 == 0:
        return float(a[:h].sum()), float(a[h:].sum())
    if middle == "split":
        return float(a[:h].sum() + a[h] / 2), float(a[h + 1:].sum() + a[h] / 2)
    return float(a[:h].sum()), float(a[h:].sum())


def mean_ratings(rows: Iterable[tuple[str, str, float | None]]) -> dict[tuple[str, str], float]:
    """Mean rating per (qid, action) over scenarios and templates; None / NaN ratings dropped."""
    acc: dict[tuple[str, str], list[float]] = {}
    for qid, action, rating in rows:
        if rating is None or not np.isfinite(rating):
            continue
        acc.setdefault((qid, action), []).append(float(rating))
    return {k: float(np.mean(v)) for k, v in acc.items()}


@dataclass(frozen=True)
class Agreement:
    """Value-action agreement of one (model, method, rating kind)."""

    pearson: Correlation
    spearman: Correlation
    n_points: int
    n_questions: int
    points: tuple[tuple[str, str, float, float], ...] = field(repr=False, default=())


def value_action_points(probes: Mapping[str, np.ndarray], ratings: Mapping[tuple[str, str], float],
                        middle: str = "split") -> list[tuple[str, str, float, float]]:
    """(qid, action, weight of the action's end of the scale, rating) for every rated action.

    Action "A" is the first option's end of the scale, "B" the last option's.
    """
    pts = []
    for qid in sorted(probes):
        wa, wb = scale_end_weights(probes[qid], middle)
        for action, w in (("A", wa), ("B", wb)):
            if (qid, action) in ratings:
                pts.append((qid, action, w, ratings[(qid, action)]))
    return pts


def value_action_agreement(probes: Mapping[str, np.ndarray],
                           ratings: Mapping[tuple[str, str], float], *, middle: str = "split",
                           n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Agreement:
    """Pearson and Spearman (scipy, with p-values) between end weights and ratings.

    The CI resamples questions (both actions of a question travel together).
    """
    pts = value_action_points(probes, ratings, middle)
    qids = sorted({p[0] for p in pts})
    x = np.array([p[2] for p in pts])
    y = np.array([p[3] for p in pts])
    groups = {q: [] for q in qids}
    for i, p in enumerate(pts):
        groups[p[0]].append(i)
    members = [np.array(groups[q]) for q in qids]

    def corr(fn, rank: bool) -> Correlation:
        r, pval = fn(x, y)
        if not np.isfinite(r):
            note = "needs >= 3 points" if len(pts) < 3 else "undefined (constant input)"
            return Correlation(None, None, len(pts), note=note)

        def stat(idx: np.ndarray) -> float:
            sel = np.concatenate([members[i] for i in idx])
            xs, ys = x[sel], y[sel]
            if rank:
                xs, ys = stats.rankdata(xs), stats.rankdata(ys)
            return _fast_r(xs, ys)

        lo, hi = bootstrap_stat_ci(len(qids), stat, n_boot=n_boot, seed=seed)
        return Correlation(r, pval, len(pts), lo, hi)

    return Agreement(corr(_pearson, False), corr(_spearman, True), len(pts), len(qids), tuple(pts))


# ----------------------------------------------------------------------------- text noise floor


def split_half_js(parsed: Sequence[int | None], k: int) -> float:
    """JS distance between the text distributions of the first and second half of the samples.

    Samples are i.i.d. draws of one prompt, so the halves are two independent sample sets of
    N // 2 each (an odd last sample is dropped).
    """
    h = len(parsed) // 2
    if h < 1:
        raise ValueError("split-half noise floor needs >= 2 samples")
    with np.errstate(invalid="ignore"):
        d = jensenshannon(p_text(parsed[:h], k), p_text(parsed[h:2 * h], k))
    return 0.0 if np.isnan(d) else float(d)


def _sample_probs(parsed: Sequence[int | None], k: int) -> np.ndarray:
    """Plug-in categorical over k options + 1 'unparseable' slot from the observed samples."""
    counts = np.zeros(k + 1)
    for c in parsed:
        counts[k if c is None else int(c)] += 1
    return counts / counts.sum()


def simulated_js_floor(probs: Sequence[float], n: int, *, n_sim: int = 2000,
                       seed: int = DEFAULT_SEED, k: int | None = None) -> float:
    """Expected JS distance between the text distributions of two independent n-sample sets.

    ``probs``: the probability of each option, optionally followed by one 'unparseable' slot
    (then pass ``k`` = number of options); unparseable draws spread 1/k over the options.
    """
    pi = as_distribution(probs, "probs")
    k = pi.size if k is None else k
    if pi.size not in (k, k + 1):
        raise ValueError(f"probs has {pi.size} entries for k={k}")
    rng = np.random.default_rng(seed)

    def dists(counts: np.ndarray) -> np.ndarray:
        valid = counts[:, :k].astype(np.float64)
        bad = counts[:, k:].sum(axis=1, keepdims=True) if pi.size > k else 0.0
        return (valid + bad / k) / n

    a = dists(rng.multinomial(n, pi, size=n_sim))
    b = dists(rng.multinomial(n, pi, size=n_sim))
    with np.errstate(invalid="ignore"):  # identical rows: sqrt of a rounding-negative -> NaN -> 0
        d = jensenshannon(a, b, axis=1)
    return float(np.mean(np.nan_to_num(d, nan=0.0)))


def analytic_js_floor(p: Sequence[float], n: int) -> float:
    """Large-n approximation of that floor (all samples parseable).

    JS divergence ~ (1/8) sum_i (a_i - b_i)^2 / p_i, and for two independent n-sample frequency
    vectors sum_i (a_i - b_i)^2 / p_i ~ (2 / n) chi^2 with s - 1 degrees of freedom (s = support
    size), so the JS distance ~ chi_{s-1} / sqrt(4 n), whose mean is
    sqrt(2 / (4 n)) Gamma(s / 2) / Gamma((s - 1) / 2). Rough for N = 10; the simulated and the
    measured floors are the ones to trust there.
    """
    a = as_distribution(p)
    s = int(np.count_nonzero(a > 0))
    if s < 2:
        return 0.0
    return math.sqrt(2.0 / (4.0 * n)) * math.exp(math.lgamma(s / 2) - math.lgamma((s - 1) / 2))


@dataclass(frozen=True)
class NoiseFloor:
    """Sampling-noise floor of the text method for one model, per question (averaged over rows).

    ``floor`` is the number to compare text-method JS distances with: the JS distance between two
    independent N-sample text distributions of the same prompt. It is the *measured* split-half
    distance (two independent N//2-sample sets) rescaled from N//2 to N samples by the ratio of
    the simulated floors at N and N//2. The simulation alone (plug-in: each row's own sample
    frequencies as the truth) is biased low, because a 10-sample estimate has fewer distinct
    answers than the model; ``simulated_half`` vs ``split_half`` shows by how much.
    """

    n_samples: int
    split_half: PerQuestion  # measured: JS between the halves (N // 2 samples each)
    simulated_half: PerQuestion  # plug-in simulation at N // 2 (checks the simulation)
    simulated_full: PerQuestion  # plug-in simulation at N
    floor: PerQuestion  # split_half * simulated_full / simulated_half: the floor at N
    analytic_full: PerQuestion  # large-n approximation at N from each row's p_text


def text_noise_floor(samples: Mapping[str, Sequence[tuple[Sequence[int | None], int]]], *,
                     n_sim: int = 500, seed: int = DEFAULT_SEED) -> NoiseFloor:
    """Noise floor from stored ``parsed`` lists: ``samples`` maps qid -> [(parsed, k), ...] (one
    entry per probed prompt of that question). Rows with fewer than 2 samples are skipped."""
    cols: dict[str, dict[str, float]] = {c: {} for c in ("split", "sim_h", "sim_f", "floor", "ana")}
    ns = set()
    rng = np.random.default_rng(seed)
    for qid in sorted(samples):
        acc: dict[str, list[float]] = {c: [] for c in ("split", "sim_h", "sim_f", "ana")}
        for parsed, k in samples[qid]:
            n = len(parsed)
            if n < 2:
                continue
            ns.add(n)
            pi = _sample_probs(parsed, k)
            sub = int(rng.integers(2**31))
            acc["split"].append(split_half_js(parsed, k))
            acc["sim_h"].append(simulated_js_floor(pi, n // 2, n_sim=n_sim, seed=sub, k=k))
            acc["sim_f"].append(simulated_js_floor(pi, n, n_sim=n_sim, seed=sub + 1, k=k))
            acc["ana"].append(analytic_js_floor(p_text(parsed, k), n))
        if acc["split"]:
            for c, v in acc.items():
                cols[c][qid] = float(np.mean(v))
            h = cols["sim_h"][qid]
            cols["floor"][qid] = cols["split"][qid] * cols["sim_f"][qid] / h if h > 0 else 0.0
    n_samples = max(ns) if ns else 0
    pq = {c: _per_question(v) for c, v in cols.items()}
    return NoiseFloor(n_samples, pq["split"], pq["sim_h"], pq["sim_f"], pq["floor"], pq["ana"])


# ----------------------------------------------------------------------------- the release's way


@dataclass(frozen=True)
class ReleaseAlignment:
    """Alignment improvement in raw EMD units, averaged as the paper's released code did
    (eval_utils.get_average_EMD, compute_metrics.draw_demographic_alignment)."""

    emd_without: float  # mean over (variant, country) cells of the style-averaged EMD
    emd_with: float
    improvement: Estimate  # mean over cells of EMD without - EMD with; CI resamples questions
    n_questions: int
    cells: dict[tuple[str, str], tuple[float, float]] = field(repr=False, default_factory=dict)

    @property
    def n_cells(self) -> int:
        return len(self.cells)


def release_alignment(with_country: Mapping[tuple[tuple[str, str], str, str], np.ndarray],
                      without_country: Mapping[tuple[tuple[str, str], str], np.ndarray],
                      human: Mapping[tuple[str, str], np.ndarray], *,
                      countries: Iterable[str] | None = None,
                      variants: Iterable[str] | None = None, qids: Iterable[str] | None = None,
                      n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> ReleaseAlignment:
    """EMD = scipy's wasserstein_distance over positions 0..k-1 (unit spacing: ``emd_1d``, no
    division by k - 1). Per (variant, country, style): mean over the questions with a model and a
    human vector (human sums of 0 skipped) of EMD with and without the country prompt; then the
    mean over styles; improvement per (variant, country) = EMD without - EMD with; reported: the
    mean over (variant, country) cells. Conditions are (style, variant) pairs as
    ``LoadedResults.country_sets`` gives them. The bootstrap CI resamples questions jointly for
    every cell and redoes the nested means."""
    keep_c = set(countries) if countries is not None else None
    keep_v = set(variants) if variants is not None else None
    keep_q = set(qids) if qids is not None else None
    cells: dict[tuple[str, str], dict[str, dict[str, tuple[float, float]]]] = {}
    for ((style, variant), country, qid), p in with_country.items():
        if ((keep_c is not None and country not in keep_c)
                or (keep_v is not None and variant not in keep_v)
                or (keep_q is not None and qid not in keep_q)):
            continue
        q = human.get((country, qid))
        p0 = without_country.get(((style, variant), qid))
        if q is None or p0 is None or float(np.sum(q)) <= 0:
            continue
        cells.setdefault((variant, country), {}).setdefault(style, {})[qid] = \
            (emd_1d(p0, q), emd_1d(p, q))
    keys = sorted(cells)
    styles = sorted({s for c in cells.values() for s in c})
    questions = sorted({q for c in cells.values() for by_q in c.values() for q in by_q})
    col = {q: i for i, q in enumerate(questions)}
    shape = (len(keys), len(styles), len(questions))
    e0, e1 = np.full(shape, np.nan), np.full(shape, np.nan)
    for i, key in enumerate(keys):
        for j, s in enumerate(styles):
            for q, (a, b) in cells[key].get(s, {}).items():
                e0[i, j, col[q]], e1[i, j, col[q]] = a, b

    def nested(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-cell style-averaged EMD without / with, questions weighted by ``weights``."""
        import warnings

        out = []
        for e in (e0, e1):
            have = np.isfinite(e)
            w = have * weights
            tot = w.sum(axis=2)
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a cell left without questions
                per_style = np.where(tot > 0, np.nansum(np.nan_to_num(e) * w, axis=2) / tot,
                                     np.nan)
                out.append(np.nanmean(per_style, axis=1) if styles else np.zeros(len(keys)))
        return out[0], out[1]

    if not keys:
        return ReleaseAlignment(math.nan, math.nan, Estimate(math.nan, math.nan, math.nan, 0), 0)
    w0, w1 = nested(np.ones(len(questions)))

    def stat(idx: np.ndarray) -> float:
        a, b = nested(np.bincount(idx, minlength=len(questions)).astype(np.float64))
        d = (a - b)[np.isfinite(a - b)]
        return float(d.mean()) if d.size else math.nan

    lo, hi = bootstrap_stat_ci(len(questions), stat, n_boot=n_boot, seed=seed)
    imp = Estimate(float(np.mean(w0 - w1)), lo, hi, len(questions))
    return ReleaseAlignment(float(np.mean(w0)), float(np.mean(w1)), imp, len(questions),
                            {k: (float(a), float(b)) for k, a, b in zip(keys, w0, w1)})


def token_set_mismatch(logits_by_qid: Mapping[str, Sequence[tuple[Sequence[float],
                                                                  Sequence[float]]]]
                       ) -> PerQuestion:
    """"A" vs " A": per probed prompt, 1.0 where the argmax of the softmax over the bare-label
    logits differs from the argmax over the space-label logits (both in display order); each
    question's prompts averaged. Not in the released code: our reconstruction of the paper's
    token-set comparison."""
    from valueprobe_jax.probing.representations import p_token

    values = {}
    for qid, pairs in logits_by_qid.items():
        if pairs:
            values[qid] = float(np.mean(mismatch_per_question(
                [p_token(a) for a, _ in pairs], [p_token(b) for _, b in pairs])))
    return _per_question(values)


@dataclass(frozen=True)
class ValidAnswers:
    """Text samples that parse to a label: the share per question (mean over its prompts) and
    the released code's column (save_valid_ratio: the mean *count* of valid answers per question,
    0..N, which its valid_ratio.csv calls a ratio)."""

    ratio: PerQuestion
    mean_count: float
    n_samples: int  # N of the rows (the largest when rows differ)


def valid_answers(parsed_by_qid: Mapping[str, Sequence[Sequence[int | None]]]) -> ValidAnswers:
    """``parsed_by_qid``: qid -> the parsed lists (canonical index or None) of its prompts."""
    ratio, counts, ns = {}, [], {0}
    for qid, lists in parsed_by_qid.items():
        lists = [p for p in lists if len(p)]
        if not lists:
            continue
        ratio[qid] = float(np.mean([sum(x is not None for x in p) / len(p) for p in lists]))
        counts.append(float(np.mean([sum(x is not None for x in p) for p in lists])))
        ns.update(len(p) for p in lists)
    return ValidAnswers(_per_question(ratio), float(np.mean(counts)) if counts else math.nan,
                        max(ns))


METHOD_PAIRS = (("token", "seq"), ("token", "text"), ("seq", "text"))


def method_agreement(by_method: Mapping[str, Mapping[tuple, np.ndarray]]
                     ) -> dict[tuple[str, str], PairwiseScores]:
    """Agreement between the probing methods on the same prompts: for each pair of methods,
    mismatch (argmax differs) and JS distance per prompt, then each question's prompts averaged.
    ``by_method``: method -> prompt key -> canonical distribution, the key's last element being
    the qid (e.g. (style, variant, qid))."""
    out = {}
    for a, b in METHOD_PAIRS:
        if a not in by_method or b not in by_method:
            continue
        common = set(by_method[a]) & set(by_method[b])
        if not common:
            continue
        per_prompt = pairwise_scores({a: by_method[a], b: by_method[b]}, [a, b])
        out[(a, b)] = PairwiseScores(_mean_by_qid(per_prompt.mismatch),
                                     _mean_by_qid(per_prompt.js), per_prompt.pairs)
    return out


def _mean_by_qid(per_prompt: PerQuestion) -> PerQuestion:
    acc: dict[str, list[float]] = {}
    for key, v in zip(per_prompt.qids, per_prompt.values):
        acc.setdefault(key[-1], []).append(float(v))
    return _per_question({q: float(np.mean(v)) for q, v in acc.items()})
