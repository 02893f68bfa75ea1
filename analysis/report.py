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
from valueprobe_jax.analysis.loading import RATING_KINDS, LoadedResults, load_results, ordered
from valueprobe_jax import io
from valueprobe_jax.analysis import metrics as M
from valueprobe_jax.vocabulary import METHODS, STYLES

METRICS_NAMED = ("mismatch rate", "JS distance", "prompt robustness", "selection bias", "Table 2",
                 "alignment improvement", "value-action agreement", "noise floor")

# The paper's published Table 2 (Pearson r and p across its models, prompt robustness vs selection
# bias, per method). Not filled in: the paper's text was not retrievable with the search tools of
# this project (only its first page is stored). Fill {method: {"mismatch": (r, p), "js": (r, p)}}
# from the paper to print it beside ours; numbers must not be guessed.
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] | None = None
PAPER_TABLE2_NOTE = (
    "The paper's published Table 2 (arXiv 2507.13490, EMNLP 2025) could not be retrieved with "
    "this project's search tools (only the paper's first page is stored there), so its numbers "
    "are not shown; no value is guessed. Set `PAPER_TABLE2` in analysis/report.py from the paper "
    "to print them here.")


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

    def est(self, pq: M.PerQuestion) -> M.Estimate:
        return pq.estimate(self.n_boot, self.seed)


def analyze(results: LoadedResults, human: Mapping[tuple[str, str], np.ndarray] | None = None, *,
            selection_variants: Sequence[str] | None = None, middle: str = "split",
            n_boot: int = M.DEFAULT_N_BOOT, seed: int = M.DEFAULT_SEED,
            alignment_qids: Sequence[str] | None = None) -> Analysis:
    """Compute every metric of the report from loaded results and optional human distributions."""
    variants = results.variants()
    sel_variants = [v for v in (selection_variants or variants) if v in variants]
    prompt_variant = "baseline" if "baseline" in variants else (variants[0] if variants else None)
    a = Analysis(results, n_boot, seed, middle, sel_variants, prompt_variant,
                 list(alignment_qids) if alignment_qids is not None else None)
    for model in results.models():
        for method in results.methods(model):
            byv = results.by_variant_style(model, method)
            for variant, by_style in byv.items():
                if len(by_style) >= 2:
                    a.prompt.setdefault(model, {}).setdefault(method, {})[variant] = \
                        M.prompt_robustness(by_style)
            chosen = {v: byv[v] for v in sel_variants if v in byv}
            if len(chosen) >= 2:
                a.selection.setdefault(model, {})[method] = M.selection_bias(chosen, sel_variants)
                a.selection_vs_baseline.setdefault(model, {})[method] = \
                    M.selection_bias_vs_baseline(chosen)
            with_c, without = results.country_sets(model, method)
            if with_c and human:
                res = M.alignment_improvement(with_c, without, human, alignment_qids)
                if res.n_cells:
                    a.alignment.setdefault(model, {})[method] = res
            ratings_by_kind = {k: M.mean_ratings(results.rating_rows(model, k))
                               for k in RATING_KINDS}
            probes = results.action_probes(model, method)
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
    for method in METHODS:
        prompt = {m: a.prompt[m][method][prompt_variant] for m in a.prompt
                  if method in a.prompt[m] and prompt_variant in a.prompt[m][method]}
        sel = {m: a.selection[m][method] for m in a.selection if method in a.selection[m]}
        if prompt or sel:
            a.table2[method] = M.table2(prompt, sel, n_boot=n_boot, seed=seed)
    return a


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
    return out


# ----------------------------------------------------------------------------- Markdown


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


METHOD_NAME = {"token": "token", "seq": "seq", "text": "text"}


def _definitions(a: Analysis) -> str:
    qset = (f"the {len(a.alignment_qids)} listed by `--alignment-questions`" if a.alignment_qids
            else "every question with human data (the paper kept only its ordinal questions; "
            "restrict with `--alignment-questions`)")
    middle = ("split equally between the two ends" if a.middle == "split"
              else "given to the B end (the paper's code)")
    return f"""## Metrics and decisions

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


def render_markdown(a: Analysis, figure_paths: Mapping[int, Sequence[pathlib.Path]],
                    out_dir: pathlib.Path) -> str:
    r = a.results
    models = r.models()
    parts = ["# Value probing report: robustness and expressiveness", ""]
    parts.append(f"Results: `{r.root}` ({len(r.files)} Parquet file(s), {r.n_rows} rows).  ")
    parts.append(f"Models: {', '.join(models) or 'none'}.  ")
    parts.append(f"Methods: {', '.join(r.methods()) or 'none'}.  ")
    parts.append(f"Experiments: {', '.join(r.experiments()) or 'none'}.  ")
    parts.append(f"Styles: {', '.join(r.styles()) or 'none'}. "
                 f"Variants: {', '.join(r.variants()) or 'none'}. "
                 f"Countries: {', '.join(r.countries()) or 'none'}.")
    parts += ["", _definitions(a)]

    # ---- prompt robustness
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

    # ---- selection bias
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

    # ---- Table 2
    parts += ["## Table 2: prompt robustness vs selection bias across models", "",
              "Ours (Pearson r across models, p-value, bootstrap CI over questions):", ""]
    rows = [[meth, cells["mismatch"].fmt(), cells["js"].fmt(), cells["mismatch"].n]
            for meth, cells in a.table2.items()]
    parts += [_table(["Method", "Mismatch rate: r (p)", "JS distance: r (p)", "Models"], rows)
              if rows else "No prompt-robustness or selection-bias numbers to correlate.", ""]
    parts += ["Paper (published Table 2):", ""]
    if PAPER_TABLE2:
        rows = [[meth, f"{c['mismatch'][0]:.3f} (p={c['mismatch'][1]:.3g})",
                 f"{c['js'][0]:.3f} (p={c['js'][1]:.3g})"] for meth, c in PAPER_TABLE2.items()]
        parts += [_table(["Method", "Mismatch rate: r (p)", "JS distance: r (p)"], rows), ""]
    else:
        parts += [PAPER_TABLE2_NOTE, ""]

    # ---- noise floor
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

    # ---- alignment
    parts += ["## Alignment improvement with country prompting (Figure 5)", ""]
    rows = [[m, meth, a.est(res.without_country).fmt(), a.est(res.with_country).fmt(),
             a.est(res.improvement).fmt(), res.improvement.n, res.n_cells]
            for m in models for meth in METHODS
            for res in [a.alignment.get(m, {}).get(meth)] if res]
    parts += [_table(["Model", "Method", "Alignment without country", "Alignment with country",
                      "Improvement", "Questions", "Comparisons"], rows)
              if rows else a.alignment_note, ""]

    # ---- value-action
    parts += ["## Value-action agreement (Figure 4)", ""]
    rows = [[m, meth, kind, ag.pearson.fmt(), ag.spearman.fmt(), ag.n_points, ag.n_questions]
            for m in models for meth in METHODS
            for kind, ag in a.agreement.get(m, {}).get(meth, {}).items()]
    parts += [_table(["Model", "Method", "Rating", "Pearson r (p) [CI]", "Spearman rho (p) [CI]",
                      "Points", "Questions"], rows) if rows
              else "No action_agreement rows with matching value probes.", ""]

    # ---- checks and figures
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
    lm = [m for m in models if a.alignment.get(m)]
    imp = {m: {k: a.est(v.improvement) for k, v in a.alignment[m].items()} for m in lm}
    return {
        2: figures.figure_prompt_robustness(fig_dir, pm, prompt_mm, prompt_js, floor, pv or ""),
        3: figures.figure_selection_bias(fig_dir, sm, sel_mm, sel_js, a.selection_variants),
        4: figures.figure_value_action(fig_dir, am, pear, spear, kind),
        5: figures.figure_alignment(fig_dir, lm, imp, a.alignment_note),
    }


def build_report(results_dir: str | os.PathLike | LoadedResults, out_dir: str | os.PathLike,
                 human: Mapping[tuple[str, str], np.ndarray] | None = None, *,
                 selection_variants: Sequence[str] | None = None, middle: str = "split",
                 n_boot: int = M.DEFAULT_N_BOOT, seed: int = M.DEFAULT_SEED,
                 alignment_qids: Sequence[str] | None = None) -> dict[str, pathlib.Path]:
    """Load (unless given loaded results), analyse, draw and write; returns the written paths:
    {"report": report.md, "metrics": metrics.json, "fig2_png": ..., "fig2_pdf": ..., ...}."""
    results = results_dir if isinstance(results_dir, LoadedResults) else load_results(results_dir)
    a = analyze(results, human, selection_variants=selection_variants, middle=middle,
                n_boot=n_boot, seed=seed, alignment_qids=alignment_qids)
    out = pathlib.Path(out_dir)
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
                   data_dir: str | os.PathLike | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Human distributions from the WVS-7 respondent CSV, keyed by the country names the results
    use (valueprobe_jax.data.wvs_human maps names to the CSV's ISO alpha-3 codes)."""
    from valueprobe_jax.data.questions import load_question_bank
    from valueprobe_jax.data.wvs_human import human_distributions

    questions = load_question_bank(data_dir)
    hd = human_distributions(csv_path, questions, list(countries))
    out = {}
    for c in countries:
        for q in questions:
            d = hd.get(c, q.id)
            if d is not None:
                out[(c, q.id)] = np.asarray(d, dtype=np.float64)
    return out


__all__ = ["Analysis", "analyze", "build_report", "to_json", "render_markdown", "draw_figures",
           "load_human_json", "human_from_wvs", "ordered", "METRICS_NAMED"]
