"""`valueprobe run --config FILE.py:ARG --workdir DIR [--config.FIELD=VALUE ...]`: run or resume
a sweep; results are Parquet shards under DIR/shards (one per chunk of work items).

DIR may be a local path or gs://BUCKET/PATH (written directly, no gcsfuse). Rerun the same command
to resume: shards that are missing, torn or corrupt are computed again. A second run on the same
DIR (same host index) is refused while the first holds DIR/lock.p<index>.json. On SIGTERM (a
preempted VM) the chunk in hand is finished and written, a resume hint is printed, and the exit
code is 143 (128 + SIGTERM: not finished, rerun to resume)."""

from __future__ import annotations

import argparse
import sys

from valueprobe_jax.experiments.config_loading import load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run or resume a sweep from a config file", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="configs/robustness.py:smollm2-135m-instruct")
    p.add_argument("--workdir", required=True,
                   help="results directory, local or gs://... (resumable; exit 143 after SIGTERM)")
    p.add_argument("--mesh", default="", help='device mesh, e.g. "data=2,tensor=4" (overrides run.mesh)')
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from valueprobe_jax.experiments import store  # noqa: PLC0415
    from valueprobe_jax.experiments.runner import run_config  # noqa: PLC0415 (heavy)

    overrides = list(args.config_overrides)
    if args.mesh:
        overrides.append(f"run.mesh={args.mesh}")
    config = load_config(args.config, overrides)
    try:
        stats = run_config(config, args.workdir, progress=not args.no_progress)
    except store.Stopped as e:
        print(e.hint("valueprobe run"), file=sys.stderr)
        return store.STOPPED_EXIT_CODE
    print(f"{config.experiment}: {stats.chunks_done} chunks run, {stats.chunks_skipped} already done, "
          f"{stats.chunks_this_host}/{stats.chunks_total} chunks on this host, "
          f"{stats.items_done} items in {stats.seconds:.1f}s -> {args.workdir.rstrip('/')}/shards")
    return 0
