"""The analysis of a results dir: every metric with its bootstrap CI, Figures 2-5, a Markdown report
a researcher can read (REPORT_DIR/report.md) and the same numbers for scripts (metrics.json).

    from valueprobe_jax.analysis.report import build_report
    build_report("runs/robustness", "runs/robustness/report", human={("Egypt", "Q1"): q, ...})

is what `valueprobe report RESULTS_DIR --out REPORT_DIR` runs.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from valueprobe_jax.analysis import figures
from valueprobe_jax.analysis.loading import (PAPER_RATING_KIND, RATING_KINDS, LoadedResults,
                                             ProbeRow, load_results, ordered)
from valueprobe_jax import io
from valueprobe_jax.analysis import metrics as M
from valueprobe_jax.analysis import paper_tables as PT
from valueprobe_jax.vocabulary import METHODS, PROCEDURE_NAMES, STYLES

METRICS_NAMED = ("mismatch rate", "JS distance", "prompt robustness", "selection bias", "Table 2",
                 "alignment improvement", "value-action agreement", "noise floor")

# The paper's published Table 2 (Pearson r and p across its 13 models, prompt robustness vs
# selection bias, per method), from analysis/paper_tables.py.
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = PT.TABLE2
PROCEDURES = PROCEDURE_NAMES  # what each means: valueprobe_jax/probing/procedure.py


@dataclass
class Analysis:
    """Every computed metric, keyed model -> method -> ...; estimates carry bootstrap CIs."""

    results: LoadedResults
    n_boot: int
    seed: int
    middle: str
    selection_variants: list[str]
    prompt_variant: str | None
    alignment_qids: list[str] | None = None
    prompt: dict[str, dict[str, dict[str, M.PairwiseScores]]] = field(default_factory=dict)
    selection: dict[str, dict[str, M.PairwiseScores]] = field(default_factory=dict)
    selection_vs_baseline: dict[str, dict[str, dict[str, M.PairwiseScores]]] = \
        field(default_factory=dict)
    table2: dict[str, dict[str, M.Correlation]] = field(default_factory=dict)
    noise: dict[str, M.NoiseFloor] = field(default_factory=dict)
    alignment: dict[str, dict[str, M.AlignmentResult]] = field(default_factory=dict)
    alignment_note: str = ""
    agreement: dict[str, dict[str, dict[str, M.Agreement]]] = field(default_factory=dict)
    procedure: str = "ours"
    alignment_countries: list[str] | None = None  # None: every country present
    alignment_emd: dict[str, dict[str, M.ReleaseAlignment]] = field(default_factory=dict)
    token_set: dict[str, M.PerQuestion] = field(default_factory=dict)
    valid: dict[str, dict[str, dict[str, M.ValidAnswers]]] = field(default_factory=dict)
    method_agree: dict[str, dict[tuple[str, str], M.PairwiseScores]] = field(default_factory=dict)
    value_action_note: str = ""
    table3: dict[str, dict[int, int]] = field(default_factory=dict)
    table3_note: str = ""
    table3_uncovered: list[str] = field(default_factory=list)

    def est(self, pq: M.PerQuestion) -> M.Estimate:
        return pq.estimate(self.n_boot, self.seed)


def analyze(results: LoadedResults, human: Mapping[tuple[str, str], np.ndarray] | None = None, *,
            selection_variants: Sequence[str] | None = None, middle: str | None = None,
            n_boot: int = M.DEFAULT_N_BOOT, seed: int = M.DEFAULT_SEED,
            alignment_qids: Sequence[str] | None = None, procedure: str = "ours",
            data_dir: str | os.PathLike | None = None) -> Analysis:
    """Compute every metric of the report from loaded results and optional human distributions.

    ``procedure="ours"`` (default) uses every variant and country present and ``middle="split"``;
    ``"paper"`` follows the released metric code: variants baseline/reverse/num, countries
    China/Egypt/Germany/Mexico/United States, alignment in raw EMD averaged per style then over
    (variant, country), value-action on models named "instruct" with the middle option at the B
    end and ratings re-parsed by the released rule (unparsed = -1)."""
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure {procedure!r}: choose {' or '.join(PROCEDURES)}")
    paper = procedure == "paper"
    middle = middle or ("second" if paper else "split")
    variants = results.variants()
    if paper:
        selection_variants = PT.RELEASE_VARIANTS
    sel_variants = [v for v in (selection_variants or variants) if v in variants]
    prompt_variant = "baseline" if "baseline" in variants else (variants[0] if variants else None)
    a = Analysis(results, n_boot, seed, middle, sel_variants, prompt_variant,
                 list(alignment_qids) if alignment_qids is not None else None, procedure=procedure)
    probe_variants = [v for v in PT.RELEASE_VARIANTS if v in variants] if paper else None
    if paper:
        a.alignment_countries = [c for c in PT.RELEASE_COUNTRIES if c in results.countries()]
    _extra_metrics(a, probe_variants, data_dir)
    for model in results.models():
        for method in results.methods(model):
            byv = results.by_variant_style(model, method)
            for variant, by_style in byv.items():
                if paper and variant not in probe_variants:
                    continue
                if len(by_style) >= 2:
                    a.prompt.setdefault(model, {}).setdefault(method, {})[variant] = \
                        M.prompt_robustness(by_style)
            chosen = {v: byv[v] for v in sel_variants if v in byv}
            if len(chosen) >= 2:
                a.selection.setdefault(model, {})[method] = M.selection_bias(chosen, sel_variants)
                a.selection_vs_baseline.setdefault(model, {})[method] = \
                    M.selection_bias_vs_baseline(chosen)
            with_c, without = results.country_sets(model, method)
            if paper:
                with_c = {k: p for k, p in with_c.items()
                          if k[1] in a.alignment_countries and k[0][1] in probe_variants}
            if with_c and human:
                res = M.alignment_improvement(with_c, without, human, alignment_qids)
                if res.n_cells:
                    a.alignment.setdefault(model, {})[method] = res
                emd = M.release_alignment(with_c, without, human, qids=alignment_qids,
                                          n_boot=n_boot, seed=seed)
                if emd.n_cells:
                    a.alignment_emd.setdefault(model, {})[method] = emd
            if paper and not PT.is_release_instruct(model):
                continue  # the release rated instruct models only (by name)
            ratings_by_kind = {k: M.mean_ratings(results.rating_rows(model, k))
                               for k in RATING_KINDS}
            if paper:
                released = M.mean_ratings(results.rating_rows(model, PAPER_RATING_KIND))
                if released:
                    ratings_by_kind["text"] = released
            probes = results.action_probes(model, method, probe_variants)
            for kind, ratings in ratings_by_kind.items():
                if ratings and probes:
                    ag = M.value_action_agreement(probes, ratings, middle=middle,
                                                  n_boot=n_boot, seed=seed)
                    if ag.n_points:
                        a.agreement.setdefault(model, {}).setdefault(method, {})[kind] = ag
        samples = results.text_samples(model)
        if samples:
            a.noise[model] = M.text_noise_floor(samples, seed=seed)
    if any(r.country is not None for r in results.probes) and not human:
        a.alignment_note = ("Demographic rows are present but no human distributions were given "
                            "(`--human FILE.json` or `--wvs-csv` with the WVS-7 respondent CSV).")
    elif not any(r.country is not None for r in results.probes):
        a.alignment_note = "No demographic (country-prompt) rows in the results."
    elif not a.alignment:
        a.alignment_note = ("No country-prompt row matched a human distribution and a "
                            "no-country row.")
    if paper:
        a.value_action_note = _paper_value_action_note(results)
    for method in METHODS:
        prompt = {m: a.prompt[m][method][prompt_variant] for m in a.prompt
                  if method in a.prompt[m] and prompt_variant in a.prompt[m][method]}
        sel = {m: a.selection[m][method] for m in a.selection if method in a.selection[m]}
        if prompt or sel:
            a.table2[method] = M.table2(prompt, sel, n_boot=n_boot, seed=seed)
    return a


def _rows(results: LoadedResults, model: str, variants: Sequence[str] | None) -> list[ProbeRow]:
    """A model's no-country probe rows, in (style, variant, qid) order, of ``variants`` only."""
    rows = results.no_country_rows(model)
    return [rows[k] for k in sorted(rows) if variants is None or k[1] in variants]


def _extra_metrics(a: Analysis, variants: Sequence[str] | None,
                   data_dir: str | os.PathLike | None) -> None:
    """The tables beyond the headline metrics: "A" vs " A" token sets, valid text answers,
    agreement between the methods, and Table 3's section counts."""
    r = a.results
    for model in r.models():
        rows = _rows(r, model, variants)
        logits: dict[str, list] = {}
        parsed: dict[str, dict[str, dict[str, list]]] = {}
        by_method: dict[str, dict[tuple, np.ndarray]] = {}
        for row in rows:
            if row.token_logits is not None and row.token_logits_space is not None:
                logits.setdefault(row.qid, []).append((row.token_logits, row.token_logits_space))
            if row.parsed and "text" in row.dist:
                parsed.setdefault(row.variant, {}).setdefault(row.style, {}) \
                    .setdefault(row.qid, []).append(row.parsed)
            for meth, p in row.dist.items():
                by_method.setdefault(meth, {})[(row.style, row.variant, row.qid)] = p
        if logits:
            a.token_set[model] = M.token_set_mismatch(logits)
        for v, by_style in parsed.items():
            for s, by_q in by_style.items():
                a.valid.setdefault(model, {}).setdefault(v, {})[s] = M.valid_answers(by_q)
        agree = M.method_agreement(by_method)
        if agree:
            a.method_agree[model] = agree
    _table3(a, data_dir)


def _table3(a: Analysis, data_dir: str | os.PathLike | None) -> None:
    from valueprobe_jax.data.questions import load_question_bank
    from valueprobe_jax.errors import InputError

    try:
        bank = load_question_bank(data_dir, download=False)
    except (InputError, OSError):
        bank = None
    qids = [q.id for q in bank] if bank else sorted({p.qid for p in a.results.probes})
    a.table3["ours"] = PT.section_count_table(qids)
    a.table3_note = (f"the paper's question bank ({len(qids)} questions)" if bank else
                     f"the {len(qids)} questions in these results (no data directory with the "
                     "paper's input_dict.json was found for the full bank)")
    if bank:
        try:
            field_of = PT.released_section_field(bank, data_dir)
        except (InputError, OSError):
            return
        counts = {n: 0 for n in a.table3["ours"]}
        for q in qids:
            if q in field_of:
                counts[field_of[q]] = counts.get(field_of[q], 0) + 1
        a.table3["released"] = counts
        a.table3_uncovered = [q for q in qids if q not in field_of]


def _paper_value_action_note(results: LoadedResults) -> str:
    left_out = [m for m in results.models() if not PT.is_release_instruct(m)]
    has_gen = any(r.rating.get(PAPER_RATING_KIND) is not None for r in results.ratings)
    parts = ["Paper procedure: probes averaged over the variants "
             f"{', '.join(PT.RELEASE_VARIANTS)} and the styles; an odd middle option goes to the "
             "B end (p[:k//2] vs p[k//2:]); only models whose name contains \"instruct\" "
             "(the release's filter, which leaves out bloomz)."]
    if left_out:
        parts.append(f"Left out by that filter: {', '.join(left_out)}.")
    if results.ratings:
        parts.append("Text ratings: the stored generations re-parsed with the released rule "
                     "(first run of digits, no range check), an unparsed generation averaged in "
                     "as -1." if has_gen else
                     "Text ratings: the rows carry no generations to re-parse with the released "
                     "rule, so the sweep's own parse is used (unparsed dropped, not -1).")
    return " ".join(parts)


# ----------------------------------------------------------------------------- numbers for JSON


def _est_dict(e: M.Estimate) -> dict:
    return {"value": _num(e.value), "lo": _num(e.lo), "hi": _num(e.hi), "n": e.n}


def _corr_dict(c: M.Correlation) -> dict:
    return {"r": _num(c.r), "p": _num(c.p), "lo": _num(c.lo), "hi": _num(c.hi), "n": c.n,
            "note": c.note}


def _num(x) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def to_json(a: Analysis) -> dict:
    """All reported numbers as one JSON-ready dict."""
    out: dict = {"results_dir": a.results.root, "n_rows": a.results.n_rows,
                 "models": a.results.models(), "bootstrap": {"n_boot": a.n_boot, "seed": a.seed,
                                                            "level": 0.95},
                 "checks": a.results.checks, "prompt_robustness": {}, "selection_bias": {},
                 "selection_bias_vs_baseline": {}, "table2": {}, "noise_floor": {},
                 "alignment": {}, "value_action": {}}
    for m, by_method in a.prompt.items():
        for meth, by_var in by_method.items():
            for v, s in by_var.items():
                out["prompt_robustness"].setdefault(m, {}).setdefault(meth, {})[v] = {
                    "mismatch": _est_dict(a.est(s.mismatch)), "js": _est_dict(a.est(s.js))}
    for m, by_method in a.selection.items():
        for meth, s in by_method.items():
            out["selection_bias"].setdefault(m, {})[meth] = {
                "variants": a.selection_variants,
                "mismatch": _est_dict(a.est(s.mismatch)), "js": _est_dict(a.est(s.js))}
            for v, sv in a.selection_vs_baseline[m][meth].items():
                out["selection_bias_vs_baseline"].setdefault(m, {}).setdefault(meth, {})[v] = {
                    "mismatch": _est_dict(a.est(sv.mismatch)), "js": _est_dict(a.est(sv.js))}
    for meth, cells in a.table2.items():
        out["table2"][meth] = {k: _corr_dict(c) for k, c in cells.items()}
    for m, nf in a.noise.items():
        out["noise_floor"][m] = {"n_samples": nf.n_samples, **{
            k: _est_dict(a.est(getattr(nf, k)))
            for k in ("split_half", "simulated_half", "simulated_full", "floor", "analytic_full")}}
    for m, by_method in a.alignment.items():
        for meth, r in by_method.items():
            out["alignment"].setdefault(m, {})[meth] = {
                "with_country": _est_dict(a.est(r.with_country)),
                "without_country": _est_dict(a.est(r.without_country)),
                "improvement": _est_dict(a.est(r.improvement)), "n_cells": r.n_cells}
    for m, by_method in a.agreement.items():
        for meth, by_kind in by_method.items():
            for kind, ag in by_kind.items():
                out["value_action"].setdefault(m, {}).setdefault(meth, {})[kind] = {
                    "pearson": _corr_dict(ag.pearson), "spearman": _corr_dict(ag.spearman),
                    "n_points": ag.n_points, "n_questions": ag.n_questions, "middle": a.middle}
    out.update(_extra_json(a))
    return out


def _extra_json(a: Analysis) -> dict:
    """The procedure and the tables beside the paper's (keys added to metrics.json)."""
    out: dict = {"procedure": a.procedure, "alignment_emd": {}, "token_set_mismatch": {},
                 "valid_answers": {}, "method_agreement": {},
                 "paper_table2": {"n_models": PT.TABLE2_N_MODELS, **{
                     meth: {k: {"r": r, "p": p} for k, (r, p) in c.items()}
                     for meth, c in PT.TABLE2.items()}},
                 "table3": {"printed": PT.TABLE3_PRINTED,
                            **{k: v for k, v in a.table3.items()},
                            "released_uncovered": a.table3_uncovered}}
    for m, by_method in a.alignment_emd.items():
        for meth, r in by_method.items():
            out["alignment_emd"].setdefault(m, {})[meth] = {
                "emd_without_country": _num(r.emd_without), "emd_with_country": _num(r.emd_with),
                "improvement": _est_dict(r.improvement), "n_cells": r.n_cells,
                "countries": sorted({c for _, c in r.cells})}
    for m, pq in a.token_set.items():
        out["token_set_mismatch"][m] = _est_dict(a.est(pq))
    for m, by_v in a.valid.items():
        for v, by_s in by_v.items():
            for st, va in by_s.items():
                out["valid_answers"].setdefault(m, {}).setdefault(v, {})[st] = {
                    "ratio": _est_dict(a.est(va.ratio)), "mean_count": _num(va.mean_count),
                    "n_samples": va.n_samples}
    for m, pairs in a.method_agree.items():
        for (x, y), sc in pairs.items():
            out["method_agreement"].setdefault(m, {})[f"{x}-{y}"] = {
                "mismatch": _est_dict(a.est(sc.mismatch)), "js": _est_dict(a.est(sc.js))}
    return out


# ----------------------------------------------------------------------------- Markdown


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


METHOD_NAME = {"token": "token", "seq": "seq", "text": "text"}


def _definitions(a: Analysis) -> str:
    qset = (f"the {len(a.alignment_qids)} listed by `--alignment-questions`" if a.alignment_qids
            else "every question with human data (the release's ordinal filter is a no-op: its "
            "construct_inputs built every probed input from the Ordinal==True questions only, so "
            "all probed questions count; restrict with `--alignment-questions`)"
            if a.procedure == "paper"
            else "every question with human data (the paper kept only its ordinal questions; "
            "restrict with `--alignment-questions`)")
    middle = ("split equally between the two ends" if a.middle == "split"
              else "given to the B end (the paper's code)")
    return f"""## Metrics and decisions

{_procedure_text(a)}

- **Mismatch rate**: fraction of questions whose most probable option (argmax; ties go to the
  lowest canonical index) differs between two conditions.
- **JS distance**: Jensen-Shannon distance (`scipy.spatial.distance.jensenshannon`, default base e,
  so the maximum is sqrt(ln 2) = 0.833) between the two distributions of a question, averaged
  over questions. All distributions are in canonical option order.
- **Prompt robustness**: for each model, method and option variant, both metrics over every pair
  of the prompt styles (default, prefixed, one_shot), averaged. The headline (Figure 2, Table 2) is
  the `{a.prompt_variant}` variant, as in the paper; every variant is tabulated.
- **Selection bias**: each question's distribution averaged over the styles within a variant, then
  both metrics over every pair of variants ({", ".join(a.selection_variants) or "none"}),
  averaged (the paper's released code compares all pairs i < j). A per-variant breakdown against
  the baseline is given too.
- **Table 2**: across models, Pearson r (with p-value) between a model's prompt robustness and its
  selection bias, per method and metric; with fewer than 3 models: "{M.NEEDS_3_MODELS}".
- **Alignment improvement**: a = 1 - EMD(p, q)/(k - 1), EMD with ground distance |i - j| over the
  canonical options (sum of |CDF_p - CDF_q|), q the WVS-7 human distribution of the prompted
  country; improvement = a with the country prompt - a of the same prompt without it, averaged
  over styles, variants and countries per question, then over questions. Questions: {qset}.
- **Value-action agreement**: the probe of a question (averaged over every style and variant
  without country) is split into the weight of the first-option end of the scale (action A) and
  of the last-option end (action B); an odd middle option's mass is
  {middle}.
  Ratings are averaged per (question, action) over scenarios and templates, unparsed ratings
  dropped; Pearson and Spearman correlations (scipy) with p-values over all (weight, rating)
  points, per model, method and rating kind (`text`: parsed from the generated answer;
  `expected`: expectation over the next-token distribution of "1".."10").
- **Noise floor of the text method**: the JS distance between two independent N-sample text
  distributions of the same prompt. Measured from the stored `parsed` samples as the distance
  between their first and second half (two independent N/2-sample sets), rescaled to N samples by
  the ratio of simulated floors at N and N/2 (the simulation draws multinomial samples from each
  row's observed answer frequencies; alone it is biased low, which its N/2 column shows). A
  text-method JS distance near the floor is sampling noise, not prompt sensitivity.
- **Confidence intervals**: percentile bootstrap over questions, {a.n_boot} resamples, numpy seed
  {a.seed}, 95%: "value [lo, hi]". For correlations the questions are resampled jointly for all
  models (Table 2) or with both actions of a question together (value-action).
"""


def _procedure_text(a: Analysis) -> str:
    if a.procedure != "paper":
        return ("Procedure: **ours** (every variant and country present; alignment "
                "1 - EMD/(k-1) averaged per question; an odd middle option split; `--procedure "
                "paper` follows the paper's released metric code).")
    countries = ", ".join(a.alignment_countries or []) or "none present"
    return (f"Procedure: **paper** (the released src/compute_metrics.py): variants "
            f"{', '.join(PT.RELEASE_VARIANTS)} only; prompt robustness on the baseline variant; "
            "selection bias over those variants' style-averaged distributions; alignment "
            "improvement in raw EMD units (scipy's wasserstein_distance over positions 0..k-1, "
            "no division by k-1), per (variant, country, style) the mean over questions, then "
            "over styles, then over (variant, country) of EMD without - EMD with, countries "
            f"{', '.join(PT.RELEASE_COUNTRIES)} (present: {countries}); human distributions "
            "should be raw respondent counts (`--wvs-csv` is read unweighted in this procedure; "
            "a `--human` file is used as given); value-action as described in its section.")


def _paper_sections(a: Analysis) -> list[str]:
    """Table 3, the token-set mismatch, valid answers and the methods' agreement."""
    models = a.results.models()
    parts = ["## Table 3: questions per WVS-7 section", "",
             f"Ours: {a.table3_note}, counted by the WVS-7 questionnaire's question-number "
             "ranges (valueprobe_jax.data.questions.SECTIONS)."
             + (" Released Section field: the Section of the released value-action file's rows "
                "for each question they cover"
                + (f" ({len(a.table3_uncovered)} not covered: "
                   f"{', '.join(a.table3_uncovered)})." if a.table3_uncovered else ".")
                if "released" in a.table3 else ""), ""]
    from valueprobe_jax.data.questions import SECTION_NAMES

    has_rel = "released" in a.table3
    rows = []
    for n, name in SECTION_NAMES.items():
        row = [n, name, a.table3["ours"].get(n, 0)]
        if has_rel:
            row.append(a.table3["released"].get(n, 0))
        printed = PT.TABLE3_PRINTED[n]
        row += [printed, "" if printed == a.table3["ours"].get(n, 0) else "differs"]
        rows.append(row)
    total = ["", "total", sum(a.table3["ours"].values())]
    if has_rel:
        total.append(sum(a.table3["released"].values()))
    rows.append(total + [PT.TABLE3_TOTAL, ""])
    header = ["#", "Section", "Ours (questionnaire ranges)"]
    header += ["Released Section field"] if has_rel else []
    parts += [_table(header + ["Paper (printed)", ""], rows), "",
              "Sections 10 and 11: the questionnaire ranges (Religious Values Q164-Q175, Ethical "
              "Values & Norms Q176-Q198) and the released file's Section field (e.g. Q176 is "
              "Section 11 there) give 6 and 23; the printed table says 7 and 22. No question is "
              "moved to match the printed table: the released files give no evidence for it.",
              ""]

    parts += ['## Token sets: "A" vs " A"', "",
              "Per model: the share of probed prompts (no country"
              + (f"; variants {', '.join(PT.RELEASE_VARIANTS)}" if a.procedure == "paper" else "")
              + ") whose most probable option under a softmax over the bare-label logits "
              "(\"A\") differs from the one over the space-label logits (\" A\"); each "
              "question's prompts averaged, bootstrap CI over questions. This is our "
              "reconstruction (the released code does not compute it); the paper reports that "
              f"{PT.TOKEN_SET_TEXT}.", ""]
    rows = [[m, a.est(pq).fmt(), pq.n] for m in models for pq in [a.token_set.get(m)] if pq]
    parts += [_table(["Model", "Mismatch rate bare vs space [CI]", "Questions"], rows)
              if rows else "No rows with both label-logit columns.", ""]

    parts += ["## Valid text answers", "",
              "Per model, variant and style: the share of the N text samples that parse to a "
              "label (with the parse mode the sweep used), each question's prompts averaged, "
              "bootstrap CI over questions; and the released code's column (save_valid_ratio, "
              "writeup/valid_ratio.csv: the mean *count* of valid answers per question, out of "
              f"N = {PT.RELEASE_TEXT_SAMPLES} there, which it calls a ratio).", ""]
    rows = []
    for m in models:
        for v in ordered(a.valid.get(m, {}), [*PT.RELEASE_VARIANTS, "lower", "shuffle"]):
            for st in ordered(a.valid[m][v], STYLES):
                va = a.valid[m][v][st]
                rows.append([m, v, st, a.est(va.ratio).fmt(), f"{va.mean_count:.2f}",
                             va.n_samples, va.ratio.n])
    parts += [_table(["Model", "Variant", "Style", "Valid ratio [CI]",
                      "Mean count (release column)", "N", "Questions"], rows)
              if rows else "No text-method rows with parsed samples.", ""]

    parts += ["## Agreement between the methods (beyond the paper)", "",
              "Per model, on the same prompts (style, variant, question; no country): the "
              "mismatch rate of the top answers and the JS distance between two methods' "
              "distributions; each question's prompts averaged, bootstrap CI over questions. "
              "Token vs text is the \"first-token vs text answer\" question.", ""]
    rows = [[m, f"{x} vs {y}", a.est(sc.mismatch).fmt(), a.est(sc.js).fmt(), sc.n]
            for m in models for (x, y), sc in a.method_agree.get(m, {}).items()]
    parts += [_table(["Model", "Methods", "Mismatch rate", "JS distance", "Questions"], rows)
              if rows else "No prompt probed with two methods.", ""]
    return parts


def _section_prompt_robustness(a: Analysis) -> list[str]:
    """The report's prompt robustness section (Markdown lines)."""
    r = a.results
    models = r.models()
    parts: list[str] = []
    parts += ["## Prompt robustness (Figure 2)", "",
              f"Pairwise over prompt styles, variant `{a.prompt_variant}`.", ""]
    rows = []
    for m in models:
        for meth in METHODS:
            s = a.prompt.get(m, {}).get(meth, {}).get(a.prompt_variant)
            if s:
                rows.append([m, meth, a.est(s.mismatch).fmt(), a.est(s.js).fmt(), s.n,
                             ", ".join(ordered({x for p in s.pairs for x in p}, STYLES))])
    parts += [_table(["Model", "Method", "Mismatch rate", "JS distance", "Questions", "Styles"],
                     rows) if rows else "No model has >= 2 prompt styles for one variant.", ""]
    rows = []
    for m in models:
        for meth in METHODS:
            for v in r.variants():
                s = a.prompt.get(m, {}).get(meth, {}).get(v)
                if s:
                    rows.append([m, meth, v, a.est(s.mismatch).fmt(), a.est(s.js).fmt(), s.n])
    if rows:
        parts += ["Every variant:", "", _table(["Model", "Method", "Variant", "Mismatch rate",
                                                "JS distance", "Questions"], rows), ""]
    return parts


def _section_selection_bias(a: Analysis) -> list[str]:
    """The report's selection bias section (Markdown lines)."""
    r = a.results
    models = r.models()
    parts: list[str] = []
    parts += ["## Selection bias (Figure 3)", "",
              "Style-averaged distributions, pairwise over variants: "
              f"{', '.join(a.selection_variants)}.", ""]
    rows = [[m, meth, a.est(s.mismatch).fmt(), a.est(s.js).fmt(), s.n]
            for m in models for meth, s in sorted(a.selection.get(m, {}).items(),
                                                  key=lambda t: METHODS.index(t[0]))]
    parts += [_table(["Model", "Method", "Mismatch rate", "JS distance", "Questions"], rows)
              if rows else "No model has >= 2 option variants.", ""]
    rows = [[m, meth, f"baseline vs {v}", a.est(s.mismatch).fmt(), a.est(s.js).fmt(), s.n]
            for m in models for meth in METHODS
            for v, s in a.selection_vs_baseline.get(m, {}).get(meth, {}).items()]
    if rows:
        parts += ["Breakdown against the baseline (diagnostic):", "",
                  _table(["Model", "Method", "Pair", "Mismatch rate", "JS distance",
                          "Questions"], rows), ""]
    return parts


def _section_table2(a: Analysis) -> list[str]:
    """The report's Table 2 section (Markdown lines)."""
    parts: list[str] = []
    parts += ["## Table 2: prompt robustness vs selection bias across models", "",
              "Ours (Pearson r across models, p-value, bootstrap CI over questions):", ""]
    rows = [[meth, cells["mismatch"].fmt(), cells["js"].fmt(), cells["mismatch"].n]
            for meth, cells in a.table2.items()]
    parts += [_table(["Method", "Mismatch rate: r (p)", "JS distance: r (p)", "Models"], rows)
              if rows else "No prompt-robustness or selection-bias numbers to correlate.", ""]
    parts += [f"Paper (published Table 2, Pearson r across its {PT.TABLE2_N_MODELS} models) "
              "beside ours (r across the models present here, n given):", ""]
    rows = []
    for meth, c in PAPER_TABLE2.items():
        for metric, label in (("mismatch", "Mismatch rate"), ("js", "JS distance")):
            ours = a.table2.get(meth, {}).get(metric)
            rows.append([meth, label, f"{c[metric][0]:.3f}", f"{c[metric][1]:.4g}",
                         f"{ours.r:.3f}" if ours and ours.r is not None else
                         (ours.note if ours else "n/a"),
                         f"{ours.p:.3g}" if ours and ours.p is not None else "n/a",
                         ours.n if ours else 0])
    parts += [_table(["Method", "Metric", "Paper r", "Paper p", "Ours r", "Ours p",
                      "Ours n (models)"], rows), ""]
    return parts


def _section_noise_floor(a: Analysis) -> list[str]:
    """The report's noise floor section (Markdown lines)."""
    r = a.results
    models = r.models()
    parts: list[str] = []
    parts += ["## Sampling-noise floor of the text method", ""]
    rows = []
    for m in models:
        nf = a.noise.get(m)
        if not nf:
            continue
        s = a.prompt.get(m, {}).get("text", {}).get(a.prompt_variant)
        text_js = a.est(s.js) if s else None
        floor = a.est(nf.floor)
        above = f"{text_js.value - floor.value:+.3f}" if text_js else "n/a"
        rows.append([m, nf.n_samples, a.est(nf.split_half).fmt(), a.est(nf.simulated_half).fmt(),
                     floor.fmt(), a.est(nf.analytic_full).fmt(),
                     text_js.fmt() if text_js else "n/a", above])
    if rows:
        parts += [_table(["Model", "N", "Split-half JS (N/2, measured)", "Simulated (N/2, plug-in)",
                          "Floor at N", "Analytic at N (large-n)",
                          f"Text prompt-robustness JS ({a.prompt_variant})",
                          "Text JS - floor"], rows),
                  "", "Text-method JS distances between prompts at or below the floor at N cannot "
                  "be told apart from resampling the same prompt.", ""]
    else:
        parts += ["No text-method rows with parsed samples.", ""]
    return parts


def _section_alignment(a: Analysis) -> list[str]:
    """The report's alignment section (Markdown lines)."""
    r = a.results
    models = r.models()
    parts: list[str] = []
    parts += ["## Alignment improvement with country prompting (Figure 5)", ""]
    rows = [[m, meth, a.est(res.without_country).fmt(), a.est(res.with_country).fmt(),
             a.est(res.improvement).fmt(), res.improvement.n, res.n_cells]
            for m in models for meth in METHODS
            for res in [a.alignment.get(m, {}).get(meth)] if res]
    gain = [_table(["Model", "Method", "Alignment without country", "Alignment with country",
                    "Improvement", "Questions", "Comparisons"], rows)
            if rows else a.alignment_note, ""]
    rows = [[m, meth, f"{res.emd_without:.3f}", f"{res.emd_with:.3f}", res.improvement.fmt(),
             res.n_questions, res.n_cells, ", ".join(sorted({c for _, c in res.cells}))]
            for m in models for meth in METHODS
            for res in [a.alignment_emd.get(m, {}).get(meth)] if res]
    raw = ["In raw EMD units, averaged the release's way (per (variant, country, style) the mean "
           "over questions, then over styles; improvement = mean over (variant, country) of EMD "
           "without - EMD with; positive = closer to the human answers):", "",
           _table(["Model", "Method", "EMD without country", "EMD with country",
                   "Improvement (EMD) [CI]", "Questions", "Variant x country cells",
                   "Countries"], rows) if rows else a.alignment_note, ""]
    gain_head = ["As alignment gain, a = 1 - EMD/(k-1) per question (our unit), averaged per "
                 "question over conditions and countries, then over questions:", ""]
    parts += raw + gain_head + gain if a.procedure == "paper" else gain_head + gain + raw
    return parts


def _section_value_action(a: Analysis) -> list[str]:
    """The report's value-action section (Markdown lines)."""
    r = a.results
    models = r.models()
    parts: list[str] = []
    parts += ["## Value-action agreement (Figure 4)", ""]
    rows = [[m, meth, kind, ag.pearson.fmt(), ag.spearman.fmt(), ag.n_points, ag.n_questions]
            for m in models for meth in METHODS
            for kind, ag in a.agreement.get(m, {}).get(meth, {}).items()]
    if a.value_action_note:
        parts += [a.value_action_note, ""]
    parts += [_table(["Model", "Method", "Rating", "Pearson r (p) [CI]", "Spearman rho (p) [CI]",
                      "Points", "Questions"], rows) if rows
              else "No action_agreement rows with matching value probes.", ""]
    parts += _paper_sections(a)
    return parts


def _section_checks_and_figures(a: Analysis, figure_paths: Mapping[int, Sequence[pathlib.Path]],
                                out_dir: pathlib.Path) -> list[str]:
    """The report's checks and figures section (Markdown lines)."""
    r = a.results
    parts: list[str] = []
    parts += ["## Data checks", ""]
    parts += [f"- {k}: {v}" for k, v in r.checks.items()]
    if r.checks.get("text samples"):
        parts.append(f"- unparseable share of text samples: "
                     f"{r.checks['unparseable text samples'] / r.checks['text samples']:.3f}")
    parts += ["", "## Figures", ""]
    titles = {2: "Figure 2: prompt-style robustness", 3: "Figure 3: selection bias",
              4: "Figure 4: value-action correlation", 5: "Figure 5: alignment improvement"}
    for num, paths in sorted(figure_paths.items()):
        links = ", ".join(f"[{p.suffix[1:].upper()}]({p.relative_to(out_dir)})" for p in paths)
        png = next(p for p in paths if p.suffix == ".png")
        parts += [f"### {titles[num]}", "", f"![{titles[num]}]({png.relative_to(out_dir)})", "",
                  links, ""]
    return parts


def render_markdown(a: Analysis, figure_paths: Mapping[int, Sequence[pathlib.Path]],
                    out_dir: pathlib.Path) -> str:
    r = a.results
    models = r.models()
    parts = ["# Value probing report: robustness and expressiveness", ""]
    parts.append(f"Results: `{r.root}` ({len(r.files)} Parquet file(s), {r.n_rows} rows).  ")
    parts.append(f"Procedure: {a.procedure}.  ")
    parts.append(f"Models: {', '.join(models) or 'none'}.  ")
    parts.append(f"Methods: {', '.join(r.methods()) or 'none'}.  ")
    parts.append(f"Experiments: {', '.join(r.experiments()) or 'none'}.  ")
    parts.append(f"Styles: {', '.join(r.styles()) or 'none'}. "
                 f"Variants: {', '.join(r.variants()) or 'none'}. "
                 f"Countries: {', '.join(r.countries()) or 'none'}.")
    parts += ["", _definitions(a)]
    parts += _section_prompt_robustness(a)
    parts += _section_selection_bias(a)
    parts += _section_table2(a)
    parts += _section_noise_floor(a)
    parts += _section_alignment(a)
    parts += _section_value_action(a)
    parts += _section_checks_and_figures(a, figure_paths, out_dir)
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- driver


def draw_figures(a: Analysis, fig_dir: pathlib.Path) -> dict[int, list[pathlib.Path]]:
    models = a.results.models()
    pv = a.prompt_variant
    pm = [m for m in models if any(pv in v for v in a.prompt.get(m, {}).values())]
    prompt_mm = {m: {k: a.est(v[pv].mismatch) for k, v in a.prompt[m].items() if pv in v}
                 for m in pm}
    prompt_js = {m: {k: a.est(v[pv].js) for k, v in a.prompt[m].items() if pv in v}
                 for m in pm}
    floor = {m: a.est(nf.floor) for m, nf in a.noise.items() if nf.floor.n}
    sm = [m for m in models if a.selection.get(m)]
    sel_mm = {m: {k: a.est(v.mismatch) for k, v in a.selection[m].items()} for m in sm}
    sel_js = {m: {k: a.est(v.js) for k, v in a.selection[m].items()} for m in sm}
    has_text = any("text" in k for v in a.agreement.values() for k in v.values())
    kind = "text" if has_text else "expected"
    am = [m for m in models if any(kind in k for k in a.agreement.get(m, {}).values())]
    pear = {m: {k: v[kind].pearson for k, v in a.agreement[m].items() if kind in v} for m in am}
    spear = {m: {k: v[kind].spearman for k, v in a.agreement[m].items() if kind in v} for m in am}
    if a.procedure == "paper":
        lm = [m for m in models if a.alignment_emd.get(m)]
        imp = {m: {k: v.improvement for k, v in a.alignment_emd[m].items()} for m in lm}
        unit = {"ylabel": "Alignment improvement (EMD without - EMD with)"}
    else:
        lm = [m for m in models if a.alignment.get(m)]
        imp = {m: {k: a.est(v.improvement) for k, v in a.alignment[m].items()} for m in lm}
        unit = {}
    return {
        2: figures.figure_prompt_robustness(fig_dir, pm, prompt_mm, prompt_js, floor, pv or ""),
        3: figures.figure_selection_bias(fig_dir, sm, sel_mm, sel_js, a.selection_variants),
        4: figures.figure_value_action(fig_dir, am, pear, spear, kind),
        5: figures.figure_alignment(fig_dir, lm, imp, a.alignment_note, **unit),
    }


def build_report(results_dir: str | os.PathLike | LoadedResults, out_dir: str | os.PathLike,
                 human: Mapping[tuple[str, str], np.ndarray] | None = None, *,
                 selection_variants: Sequence[str] | None = None, middle: str | None = None,
                 n_boot: int = M.DEFAULT_N_BOOT, seed: int = M.DEFAULT_SEED,
                 alignment_qids: Sequence[str] | None = None, procedure: str = "ours",
                 data_dir: str | os.PathLike | None = None) -> dict[str, pathlib.Path]:
    """Load (unless given loaded results), analyse, draw and write; returns the written paths:
    {"report": report.md, "metrics": metrics.json, "fig2_png": ..., "fig2_pdf": ..., ...}."""
    results = results_dir if isinstance(results_dir, LoadedResults) else load_results(results_dir)
    a = analyze(results, human, selection_variants=selection_variants, middle=middle,
                n_boot=n_boot, seed=seed, alignment_qids=alignment_qids, procedure=procedure,
                data_dir=data_dir)
    out = io.output_path(out_dir)  # a local directory or a bucket
    out.mkdir(parents=True, exist_ok=True)
    figs = draw_figures(a, out / "figures")
    report = out / "report.md"
    io.write_text(report, render_markdown(a, figs, out))
    metrics_json = out / "metrics.json"
    io.write_text(metrics_json, json.dumps(to_json(a), indent=1, sort_keys=True) + "\n")
    paths = {"report": report, "metrics": metrics_json}
    for num, ps in figs.items():
        for p in ps:
            paths[f"fig{num}_{p.suffix[1:]}"] = p
    return paths


def load_human_json(path: str | os.PathLike) -> dict[tuple[str, str], np.ndarray]:
    """A plain human-distribution file: {country: {qid: [probabilities in canonical order]}}."""
    from valueprobe_jax.errors import InputError

    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, dict) for v in obj.values()):
        raise InputError(f"{path}: expected {{country: {{qid: [probabilities]}}}}")
    out = {}
    for country, by_q in obj.items():
        for qid, q in by_q.items():
            arr = np.asarray(q, dtype=np.float64) if isinstance(q, list) else None
            if arr is None or arr.ndim != 1 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise InputError(f"{path}: {country}/{qid} is not a list of probabilities")
            out[(country, qid)] = arr
    return out


def human_from_wvs(csv_path: str | os.PathLike, countries: Sequence[str],
                   data_dir: str | os.PathLike | None = None, *,
                   weighted: bool = True) -> dict[tuple[str, str], np.ndarray]:
    """Human distributions from the WVS-7 respondent CSV, keyed by the country names the results
    use (valueprobe_jax.data.wvs_human maps names to the CSV's ISO alpha-3 codes);
    ``weighted=False``: raw respondent counts (the paper's procedure)."""
    from valueprobe_jax.data.questions import load_question_bank
    from valueprobe_jax.data.wvs_human import human_distributions

    questions = load_question_bank(data_dir)
    hd = human_distributions(csv_path, questions, list(countries), weighted=weighted)
    out = {}
    for c in countries:
        for q in questions:
            d = hd.get(c, q.id)
            if d is not None:
                out[(c, q.id)] = np.asarray(d, dtype=np.float64)
    return out


__all__ = ["Analysis", "analyze", "build_report", "to_json", "render_markdown", "draw_figures",
           "load_human_json", "human_from_wvs", "ordered", "METRICS_NAMED"]
