"""`valueprobe merge WORKDIR`: join the Parquet shards every host wrote into one results file.

    valueprobe merge runs/robustness            # -> runs/robustness/results.parquet
"""

from __future__ import annotations

import argparse
import pathlib

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


def shard_files(workdir: pathlib.Path, out: pathlib.Path) -> list[pathlib.Path]:
    """WORKDIR/shards/*.parquet when that folder exists, else every finished *.parquet below
    WORKDIR; temporary (dot) files and the output itself are left out."""
    root = workdir / "shards" if (workdir / "shards").is_dir() else workdir
    return sorted(p for p in root.rglob("*.parquet")
                  if not p.name.startswith(".") and p.resolve() != out.resolve())


def run(args: argparse.Namespace) -> int:
    workdir = pathlib.Path(args.workdir)
    if not workdir.is_dir():
        raise InputError(f"{workdir}: work directory not found")
    out = pathlib.Path(args.out) if args.out else workdir / "results.parquet"
    files = shard_files(workdir, out)
    if not files:
        raise InputError(f"{workdir}: no Parquet shards found")
    summary = merge_shards(files, out, key=[k.strip() for k in args.key.split(",") if k.strip()])
    print(f"merged {summary} -> {out}")
    return 0
