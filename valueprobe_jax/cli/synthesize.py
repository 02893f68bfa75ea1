"""`valueprobe synthesize`: build a value-action dataset as the paper did: scenes generated for
each question's two opposite answers, parsed and filtered, then checked by a judge with the
paper's Q1-Q4 verification prompt. Resumable: rerun the same command to finish a workdir.

  valueprobe synthesize --config configs/synthesis.py:MODEL --workdir DIR [--config.max_questions=N]

Writes DIR/scenarios.jsonl (released format), DIR/scenes.jsonl (kept scenes before the judge)
and DIR/report.json (counts of what was kept and dropped, and why)."""

from __future__ import annotations

import argparse
import pathlib

from valueprobe_jax.experiments.config_loading import load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synthesize", help="generate and verify value-action scenes",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True,
                   help="configs/synthesis.py:MODEL (--config.FIELD=VALUE overrides any field)")
    p.add_argument("--workdir", required=True, help="output directory (resumable)")
    p.add_argument("--quiet", action="store_true", help="no per-question progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from valueprobe_jax.synthesis.pipeline import report_lines, run_synthesis  # noqa: PLC0415

    config = load_config(args.config, getattr(args, "config_overrides", ()))
    workdir = pathlib.Path(args.workdir)
    report = run_synthesis(config, workdir, log=(lambda _: None) if args.quiet else print)
    for line in report_lines(report):
        print(line)
    out = workdir / ("scenarios.jsonl" if "verification" in report else "scenes.jsonl")
    print(f"-> {out} (report: {workdir / 'report.json'})")
    return 0
