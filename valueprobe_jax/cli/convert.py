"""`valueprobe convert`: any supported checkpoint (registry name, HF directory, GGUF) -> an orbax
directory that ``load_model`` restores in seconds (optionally straight onto a device mesh). An HF
directory is converted one parameter at a time, so a 70B checkpoint needs no 140 GB of memory."""

from __future__ import annotations

import argparse
import time

DTYPES = ("float32", "bfloat16")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert", help="convert a checkpoint to an orbax directory",
                              description=__doc__)
    p.add_argument("--model", required=True, help="registry name, HF directory or .gguf file")
    p.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="stored parameter dtype")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from valueprobe_jax import io
    from valueprobe_jax.models.checkpoints import convert

    for p in io.remove_stale_partials(args.out):
        print(f"removed {p}: the partial output of a conversion that was killed")
    t0 = time.perf_counter()
    name, cfg, out = convert(args.model, args.out, dtype=args.dtype)
    print(f"{name}: {cfg.num_params() / 1e6:.1f}M parameters ({args.dtype}) -> {out} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0
