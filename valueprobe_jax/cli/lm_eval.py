"""`valueprobe lm-eval ...`: lm-evaluation-harness's own command line with the `valueprobe`
model registered (lm-eval 0.4.13 finds only models imported before its CLI runs). Every argument
after `lm-eval` goes to lm-eval unchanged, e.g.

    valueprobe lm-eval run --model valueprobe --model_args model=smollm2-135m-instruct \\
        --tasks hellaswag --batch_size 8

Needs the `[lmeval]` extra (pip install -e ".[lmeval]")."""

from __future__ import annotations

import argparse
import sys

from valueprobe_jax.errors import InputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("lm-eval", help="run lm-evaluation-harness with the valueprobe model",
                              description=__doc__, add_help=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import valueprobe_jax.lmeval  # noqa: F401, PLC0415  registers the "valueprobe" model
        from lm_eval.__main__ import cli_evaluate  # noqa: PLC0415
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "lm_eval":
            raise InputError('lm-eval is not installed: pip install -e ".[lmeval]"') from e
        raise
    argv = sys.argv
    # every argument after `lm-eval` (cli.main hands them over unparsed)
    sys.argv = ["valueprobe lm-eval", *getattr(args, "passthrough", [])]
    try:
        return int(cli_evaluate() or 0)
    finally:
        sys.argv = argv
