"""`valueprobe run --config FILE.py:ARG --workdir DIR [--config.FIELD=VALUE ...]`: run or resume
a sweep; results are Parquet shards under DIR/shards (one per chunk of work items)."""

from __future__ import annotations

import argparse

from valueprobe_jax.experiments.config_loading import load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run or resume a sweep from a config file", description=__doc__)
    p.add_argument("--config", required=True, help="configs/robustness.py:smollm2-135m-instruct")
    p.add_argument("--workdir", required=True, help="results directory (resumable)")
    p.add_argument("--mesh", default="", help='device mesh, e.g. "data=2,tensor=4" (overrides run.mesh)')
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from valueprobe_jax.experiments.runner import run_config  # noqa: PLC0415 (heavy)

    overrides = list(args.config_overrides)
    if args.mesh:
        overrides.append(f"run.mesh={args.mesh}")
    config = load_config(args.config, overrides)
    stats = run_config(config, args.workdir, progress=not args.no_progress)
    print(f"{config.experiment}: {stats.chunks_done} chunks run, {stats.chunks_skipped} already done, "
          f"{stats.chunks_this_host}/{stats.chunks_total} chunks on this host, "
          f"{stats.items_done} items in {stats.seconds:.1f}s -> {args.workdir}/shards")
    return 0
