"""`valueprobe report RESULTS_DIR --out REPORT_DIR`: every metric with bootstrap CIs, Figures 2-5
(PNG and PDF) and a Markdown report from a results dir's Parquet files."""

from __future__ import annotations

import argparse
import json
import pathlib

from valueprobe_jax.errors import InputError
from valueprobe_jax.vocabulary import PROCEDURE_NAMES


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", description=__doc__,
                              help="metrics with CIs, Figures 2-5 and a Markdown report")
    p.add_argument("results_dir", help="directory of result Parquet files (read recursively)")
    p.add_argument("--out", required=True,
                   help="report directory (report.md, metrics.json, figures/)")
    p.add_argument("--human", help="human answer distributions as JSON {country: {qid: [p, ...]}}")
    p.add_argument("--wvs-csv", help="the WVS-7 respondent CSV (alternative to --human)")
    p.add_argument("--data-dir", help="paper data mirror for the question bank (with --wvs-csv, "
                   "and for Table 3's counts of the whole bank and the released Section field)")
    p.add_argument("--procedure", choices=PROCEDURE_NAMES, default="ours",
                   help="ours (default): every variant and country present; paper: the released "
                   "metric code (variants baseline,reverse,num; 5 countries without Czech; raw "
                   "EMD; unweighted WVS counts; middle option to the B end; instruct models for "
                   "value-action; released rating parse)")
    p.add_argument("--selection-variants",
                   help="comma-separated variants for selection bias (default: every variant in "
                   "the results; the paper's code used baseline,reverse,num)")
    p.add_argument("--middle", choices=("split", "second"), default=None,
                   help="odd middle option in value-action agreement: split equally (default of "
                   "--procedure ours) or give it to the B end as the paper's code did (default "
                   "of --procedure paper)")
    p.add_argument("--alignment-questions",
                   help="file of question ids (JSON list or one per line) to keep for the "
                   "alignment metric (the paper kept its ordinal questions); default: all")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=run)
    return p


def _read_qids(path: str) -> list[str]:
    """Question ids from a JSON list or a text file with one id per line."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    try:
        qids = json.loads(text)
    except json.JSONDecodeError:
        qids = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(qids, list) or not qids or not all(isinstance(q, str) for q in qids):
        raise InputError(f"{path}: expected a JSON list of question ids or one id per line")
    return qids


def run(args: argparse.Namespace) -> int:
    from valueprobe_jax.analysis.loading import load_results
    from valueprobe_jax.analysis.report import build_report, human_from_wvs, load_human_json

    root = pathlib.Path(args.results_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    if args.bootstrap < 0:
        raise InputError(f"--bootstrap {args.bootstrap}: must be >= 0")
    if args.human and args.wvs_csv:
        raise InputError("--human and --wvs-csv: give one source of human distributions, not both")
    variants = None
    if args.selection_variants and args.procedure == "paper":
        raise InputError("--selection-variants: --procedure paper uses the release's variants "
                         "(baseline, reverse, num); drop one of the two")
    if args.selection_variants:
        variants = [v.strip() for v in args.selection_variants.split(",") if v.strip()]
        if len(variants) < 2:
            raise InputError(f"--selection-variants {args.selection_variants!r}: "
                             "needs >= 2 variants")
    results = load_results(root)
    unknown = sorted(set(variants or []) - set(results.variants()))
    if unknown:
        raise InputError(f"--selection-variants: {', '.join(unknown)} not in the results "
                         f"(have {', '.join(results.variants())})")
    alignment_qids = _read_qids(args.alignment_questions) if args.alignment_questions else None
    human = None
    if args.human:
        human = load_human_json(args.human)
    elif args.wvs_csv:
        human = human_from_wvs(args.wvs_csv, results.countries(), args.data_dir,
                               weighted=args.procedure != "paper")
    paths = build_report(results, args.out, human, selection_variants=variants, middle=args.middle,
                         n_boot=args.bootstrap, seed=args.seed, alignment_qids=alignment_qids,
                         procedure=args.procedure, data_dir=args.data_dir)
    print(f"report: {paths['report']}")
    print(f"metrics: {paths['metrics']}")
    print("figures: " + " ".join(str(p) for k, p in paths.items() if k.startswith("fig")))
    return 0
