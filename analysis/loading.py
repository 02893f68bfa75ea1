"""Result Parquet files -> the plain mappings valueprobe_jax.analysis.metrics works on.

A results dir holds one or many shards (DIR/results.parquet, DIR/shards/*.parquet, ...); every
*.parquet under it is read, with the shards' schemas unified (action-rating shards may lack the
probe columns and the other way round). Rows are checked against the contract of
valueprobe_jax/results.py, and the stored distributions are recomputed from the raw numbers
(label logits, option log-likelihoods, parsed samples) with valueprobe_jax.probing.representations: a
disagreement is counted and shown in the report, not hidden.

Which rows feed which metric:
- no-country probes (prompt robustness, selection bias, noise floor, value-action probes): rows
  with a null country, taken per (model, style, variant, qid) from experiment "robustness", else
  "probe", else "demographic" (its no-country condition);
- country probes (alignment): experiment "demographic" rows with a country; their no-country
  counterpart is the demographic sweep's own no-country row where present, else the one above.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from valueprobe_jax.probing import representations
from valueprobe_jax.errors import InputError
from valueprobe_jax.experiments.results import parquet_files
from valueprobe_jax.vocabulary import METHODS, STYLES, VARIANTS

METHOD_COLUMN = {m: f"p_{m}" for m in METHODS}
BASE_COLUMNS = ("model", "experiment", "qid")
# the columns the metrics read from probe rows and from action-rating rows
PROBE_METRIC_COLUMNS = ("style", "variant", "country", *METHOD_COLUMN.values(), "parsed")
ACTION_METRIC_COLUMNS = ("action", "rating_text", "rating_expected")
OPTIONAL_COLUMNS = ("display_order", "token_logits", "token_logits_space", "option_logprob",
                    "option_ntokens", "scenario_id", "template", "seed", "generations")
ACTION_EXPERIMENT = "action_agreement"
NO_COUNTRY_PRIORITY = ("robustness", "probe", "demographic")
RATING_KINDS = ("text", "expected")
# rating["text_paper"]: the generations re-parsed with the released rule (first digit run, no
# range check), an unparsed generation counted as -1 and averaged in (eval_utils.load_action_scores)
PAPER_RATING_KIND = "text_paper"
UNPARSED_RATING_PAPER = -1.0


def ordered(names: set[str] | Sequence[str], order: Sequence[str]) -> list[str]:
    """Known names in the paper's order first, then any others sorted."""
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


@dataclass
class ProbeRow:
    model: str
    experiment: str
    style: str
    variant: str
    country: str | None
    qid: str
    dist: dict[str, np.ndarray]  # method -> canonical distribution (absent: not run / invalid)
    parsed: list[int | None] | None
    k: int
    token_logits: list[float] | None = None  # display order, bare labels ("A")
    token_logits_space: list[float] | None = None  # display order, " A"


@dataclass
class RatingRow:
    model: str
    qid: str
    scenario_id: str | None
    action: str
    template: int | None
    rating: dict[str, float | None]  # "text": mean parsed rating of the row's generations


@dataclass
class LoadedResults:
    """Every probe and rating row of a results dir, plus data checks for the report."""

    root: str
    files: list[pathlib.Path]
    n_rows: int
    probes: list[ProbeRow]
    ratings: list[RatingRow]
    checks: dict[str, int] = field(default_factory=dict)

    # ---- selections
    def models(self) -> list[str]:
        return sorted({r.model for r in self.probes} | {r.model for r in self.ratings})

    def methods(self, model: str | None = None) -> list[str]:
        have = {m for r in self.probes if model in (None, r.model) for m in r.dist}
        return [m for m in METHODS if m in have]

    def no_country_rows(self, model: str) -> dict[tuple[str, str, str], ProbeRow]:
        """(style, variant, qid) -> row, from the highest-priority experiment that has it."""
        out: dict[tuple[str, str, str], ProbeRow] = {}
        rank = {e: i for i, e in enumerate(NO_COUNTRY_PRIORITY)}
        for r in self.probes:
            if r.model != model or r.country is not None or r.experiment not in rank:
                continue
            key = (r.style, r.variant, r.qid)
            if key not in out or rank[r.experiment] < rank[out[key].experiment]:
                out[key] = r
        return out

    def by_variant_style(self, model: str,
                         method: str) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        """variant -> style -> qid -> distribution (no-country probes)."""
        out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for (style, variant, qid), r in self.no_country_rows(model).items():
            if method in r.dist:
                out.setdefault(variant, {}).setdefault(style, {})[qid] = r.dist[method]
        return out

    def country_sets(self, model: str, method: str):
        """(with_country {((style, variant), country, qid): p},
        without {((style, variant), qid): p})."""
        with_c, own_none = {}, {}
        for r in self.probes:
            if r.model != model or r.experiment != "demographic" or method not in r.dist:
                continue
            if r.country is None:
                own_none[((r.style, r.variant), r.qid)] = r.dist[method]
            else:
                with_c[((r.style, r.variant), r.country, r.qid)] = r.dist[method]
        without = {((s, v), q): r.dist[method]
                   for (s, v, q), r in self.no_country_rows(model).items() if method in r.dist}
        without.update(own_none)
        return with_c, without

    def countries(self, model: str | None = None) -> list[str]:
        return sorted({r.country for r in self.probes if r.country is not None
                       and model in (None, r.model)})

    def text_samples(self, model: str) -> dict[str, list[tuple[list[int | None], int]]]:
        """qid -> [(parsed, k)] of every no-country text-method row."""
        out: dict[str, list[tuple[list[int | None], int]]] = {}
        for r in self.no_country_rows(model).values():
            if r.parsed and "text" in r.dist:
                out.setdefault(r.qid, []).append((r.parsed, r.k))
        return out

    def action_probes(self, model: str, method: str,
                      variants: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """qid -> the no-country distribution averaged over every style and variant (the paper
        averaged its probes over templates and variants before pairing them with actions);
        ``variants`` keeps only those variants."""
        acc: dict[str, list[np.ndarray]] = {}
        for r in self.no_country_rows(model).values():
            if method in r.dist and (variants is None or r.variant in variants):
                acc.setdefault(r.qid, []).append(r.dist[method])
        return {q: np.mean(v, axis=0) for q, v in acc.items()}

    def rating_rows(self, model: str, kind: str) -> list[tuple[str, str, float | None]]:
        return [(r.qid, r.action, r.rating.get(kind)) for r in self.ratings if r.model == model]

    def styles(self) -> list[str]:
        return ordered({r.style for r in self.probes}, STYLES)

    def variants(self) -> list[str]:
        return ordered({r.variant for r in self.probes}, VARIANTS)

    def experiments(self) -> list[str]:
        names = {r.experiment for r in self.probes}
        return sorted(names | ({ACTION_EXPERIMENT} if self.ratings else set()))


# ----------------------------------------------------------------------------- reading


def _read_table(files: list[pathlib.Path], root: str) -> pa.Table:
    schemas = []
    for f in files:
        try:
            schemas.append(pq.read_schema(f))
        except (pa.ArrowInvalid, OSError) as e:
            why = str(e).splitlines()[0]
            raise InputError(f"{f}: not a readable Parquet file ({why})") from None
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        why = str(e).splitlines()[0]
        raise InputError(f"{root}: shards disagree on column types ({why})") from None
    names = set(schema.names)
    missing = [c for c in BASE_COLUMNS if c not in names]
    if missing:
        raise InputError(f"{root}: results lack the column(s) {', '.join(missing)} "
                         "(not valueprobe result files?)")
    wanted = [c for c in (*BASE_COLUMNS, *PROBE_METRIC_COLUMNS, *ACTION_METRIC_COLUMNS, *OPTIONAL_COLUMNS)
              if c in names]
    ds = pads.dataset([str(f) for f in files], schema=schema, format="parquet")
    return ds.to_table(columns=wanted)


def _dist(value, name: str) -> np.ndarray | None:
    if value is None:
        return None
    a = np.asarray([math.nan if v is None else v for v in value], dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0) or a.sum() <= 0:
        return None
    return a / a.sum()


def _mean_rating(value) -> float | None:
    if value is None:
        return None
    vals = value if isinstance(value, (list, tuple)) else [value]
    vals = [float(v) for v in vals if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _paper_rating(generations) -> float | None:
    """Mean of the released rule's ratings of a row's generations (None: no generations)."""
    if not generations:
        return None
    from valueprobe_jax.probing.parsing import parse_rating

    vals = [parse_rating(g or "", mode="paper") for g in generations]
    return float(np.mean([UNPARSED_RATING_PAPER if v is None else v for v in vals]))


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, atol=1e-6, rtol=0))


def _check_recompute(row: dict, dist: dict[str, np.ndarray], checks: dict[str, int]) -> None:
    """Recompute p_token / p_seq / p_text from the raw columns where they are stored."""
    order = row.get("display_order")
    try:
        if "token" in dist and row.get("token_logits") is not None and order is not None:
            ref = representations.p_token(row["token_logits"], row.get("token_logits_space"), order)
            checks["p_token recomputed"] += 1
            checks["p_token differs from its logits"] += not _close(ref, dist["token"])
        if ("seq" in dist and row.get("option_logprob") is not None
                and row.get("option_ntokens") is not None and order is not None):
            ref = representations.p_seq(row["option_logprob"], row["option_ntokens"], order)
            checks["p_seq recomputed"] += 1
            checks["p_seq differs from its log-likelihoods"] += not _close(ref, dist["seq"])
        if "text" in dist and row.get("parsed"):
            ref = representations.p_text(row["parsed"], len(dist["text"]))
            checks["p_text recomputed"] += 1
            checks["p_text differs from its parsed samples"] += not _close(ref, dist["text"])
    except ValueError:
        checks["rows whose raw columns cannot be recomputed"] += 1


def _is_rating(row: dict) -> bool:
    """Action-rating rows name a scenario; the action-agreement sweep's value probes do not."""
    return row.get("scenario_id") is not None or (
        row["experiment"] == ACTION_EXPERIMENT and row.get("style") is None)


def load_results(results_dir: str | os.PathLike) -> LoadedResults:
    """Read and check every result row under ``results_dir``; InputError if there are none."""
    root = str(results_dir)
    if not os.path.exists(root):
        raise InputError(f"{root}: no such directory")
    files = parquet_files(root)
    if not files:
        raise InputError(f"{root}: no .parquet result files under this directory")
    table = _read_table(files, root)
    names = set(table.column_names)
    rows = table.to_pylist()
    has_ratings = any(_is_rating(r) for r in rows)
    has_probes = any(not _is_rating(r) for r in rows)
    for needed, cols in ((has_probes, PROBE_METRIC_COLUMNS), (has_ratings, ACTION_METRIC_COLUMNS)):
        missing = [c for c in cols if c not in names] if needed else []
        if missing:
            raise InputError(f"{root}: results lack the column(s) {', '.join(missing)}")
    checks = {k: 0 for k in ("duplicate rows dropped", "invalid distributions skipped",
                             "p_token recomputed", "p_token differs from its logits",
                             "p_seq recomputed", "p_seq differs from its log-likelihoods",
                             "p_text recomputed", "p_text differs from its parsed samples",
                             "rows whose raw columns cannot be recomputed",
                             "text samples", "unparseable text samples")}
    probes, ratings, seen = [], [], set()
    for row in rows:
        if _is_rating(row):
            key = ("rating", row["model"], row["qid"], row.get("scenario_id"), row.get("action"),
                   row.get("template"))
        else:
            key = ("probe", row["model"], row["experiment"], row.get("style"), row.get("variant"),
                   row.get("country"), row["qid"])
        if key in seen:
            checks["duplicate rows dropped"] += 1
            continue
        seen.add(key)
        if _is_rating(row):
            if row.get("action") not in ("A", "B"):
                raise InputError(f"{root}: action rating row for {row['qid']} has action "
                                 f"{row.get('action')!r} (expected 'A' or 'B')")
            ratings.append(RatingRow(row["model"], row["qid"], row.get("scenario_id"),
                                     row["action"], row.get("template"),
                                     {"text": _mean_rating(row.get("rating_text")),
                                      "expected": _mean_rating(row.get("rating_expected")),
                                      PAPER_RATING_KIND: _paper_rating(row.get("generations"))}))
            continue
        dist = {}
        for method, col in METHOD_COLUMN.items():
            if row.get(col) is None:
                continue
            d = _dist(row[col], col)
            if d is None:
                checks["invalid distributions skipped"] += 1
            else:
                dist[method] = d
        if len({len(d) for d in dist.values()}) > 1:
            raise InputError(f"{root}: row {row['model']}/{row['qid']}/{row.get('style')}/"
                             f"{row.get('variant')} has distributions of different lengths")
        parsed = row.get("parsed")
        if parsed is not None and "text" in dist:
            checks["text samples"] += len(parsed)
            checks["unparseable text samples"] += sum(p is None for p in parsed)
        _check_recompute(row, dist, checks)
        k = len(next(iter(dist.values()))) if dist else 0
        probes.append(ProbeRow(row["model"], row["experiment"], row.get("style"),
                               row.get("variant"), row.get("country"), row["qid"], dist, parsed, k,
                               row.get("token_logits"), row.get("token_logits_space")))
    return LoadedResults(root, files, len(rows), probes, ratings, checks)
