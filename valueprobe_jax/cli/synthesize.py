"""`valueprobe synthesize`: build a value-action dataset as the paper did: scenes generated for
each question's two opposite answers, parsed and filtered, then checked by a judge with the
paper's Q1-Q4 verification prompt. Resumable: rerun the same command to finish a workdir.

  valueprobe synthesize --config configs/synthesis.py:MODEL --workdir DIR [--config.max_questions=N]

Writes DIR/scenarios.jsonl (released format), DIR/scenes.jsonl (kept scenes before the judge)
and DIR/report.json (counts of what was kept and dropped, and why). DIR may be gs://BUCKET/PATH.
On SIGTERM the batch in hand is finished and written, a resume hint is printed and the exit code
is 143; a second run on the same DIR is refused while the first holds its lock."""

from __future__ import annotations

import argparse
import sys

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
    from valueprobe_jax.experiments import store  # noqa: PLC0415
    from valueprobe_jax.synthesis.pipeline import report_lines, run_synthesis  # noqa: PLC0415

    config = load_config(args.config, getattr(args, "config_overrides", ()))
    try:
        report = run_synthesis(config, args.workdir,
                               log=(lambda _: None) if args.quiet else print)
    except store.Stopped as e:
        print(e.hint("valueprobe synthesize"), file=sys.stderr)
        return store.STOPPED_EXIT_CODE
    for line in report_lines(report):
        print(line)
    out = "scenarios.jsonl" if "verification" in report else "scenes.jsonl"
    workdir = args.workdir.rstrip("/")
    print(f"-> {workdir}/{out} (report: {workdir}/report.json)")
    return 0
