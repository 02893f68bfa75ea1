"""`valueprobe merge WORKDIR`: join the Parquet shards every host wrote into one results file.

    valueprobe merge runs/robustness            # -> runs/robustness/results.parquet
    valueprobe merge gs://bucket/rob            # -> gs://bucket/rob/results.parquet
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from valueprobe_jax import io
from valueprobe_jax.errors import InputError
from valueprobe_jax.experiments.merge import merge_shards


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("merge", help="merge per-host result shards into one Parquet file",
                              description=__doc__.splitlines()[0])
    p.add_argument("workdir", help="sweep work directory (its shards/ folder, or any *.parquet under it)")
    p.add_argument("--out", default=None, help="output file (default WORKDIR/results.parquet)")
    p.add_argument("--key", default="key", help="comma-separated key column(s) to deduplicate on")
    p.set_defaults(func=run)
    return p


def shard_files(workdir: Any, out: Any) -> list[Any]:
    """WORKDIR/shards/*.parquet when that folder exists, else every finished *.parquet below
    WORKDIR; temporary (dot) files and the output itself are left out."""
    root = workdir / "shards" if (workdir / "shards").is_dir() else workdir
    return [p for p in io.find_files(root, ".parquet") if os.fspath(p) != os.fspath(out)]


def run(args: argparse.Namespace) -> int:
    workdir = io.as_path(os.path.abspath(args.workdir) if not io.is_remote(args.workdir)
                         else args.workdir)
    if not workdir.is_dir():
        raise InputError(f"{args.workdir}: work directory not found")
    out = (io.as_path(os.path.abspath(args.out) if not io.is_remote(args.out) else args.out)
           if args.out else workdir / "results.parquet")
    files = shard_files(workdir, out)
    if not files:
        raise InputError(f"{args.workdir}: no Parquet shards found")
    summary = merge_shards(files, out, key=[k.strip() for k in args.key.split(",") if k.strip()])
    print(f"merged {summary} -> {out}")
    return 0
