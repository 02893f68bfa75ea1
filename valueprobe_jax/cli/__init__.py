"""The `valueprobe` command. Each subcommand lives in its own module of this package and exposes
``add_parser(subparsers)`` and ``run(args) -> int``; library modules never import from here."""

from __future__ import annotations

import argparse
import importlib
import sys

from valueprobe_jax import compile_cache, xla_flags
from valueprobe_jax.experiments.config_loading import split_config_overrides
from valueprobe_jax.errors import InputError

# subcommand name -> module under valueprobe_jax.cli
SUBCOMMANDS = {
    "convert": "convert",
    "logprobs": "logprobs",
    "probe": "probe",
    "run": "run",
    "merge": "merge",
    "report": "report",
    "bench": "bench",
    "plan": "plan",
    "synthesize": "synthesize",
    "verify": "verify",
    "lm-eval": "lm_eval",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="valueprobe", description=__doc__.splitlines()[0])
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not use JAX's persistent compilation cache under $VALUEPROBE_CACHE/xla "
                             f"(also: {compile_cache.ENV}=0)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"valueprobe_jax.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name == f"valueprobe_jax.cli.{module}":
                continue  # subcommand not built yet
            raise
        mod.add_parser(sub)
    return parser


# subcommands whose arguments belong to another program and pass through unparsed
PASSTHROUGH = ("lm-eval",)


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """(argv up to a pass-through subcommand, everything after it), or None."""
    for i, a in enumerate(argv):
        if not a.startswith("-"):
            return (argv[:i + 1], argv[i + 1:]) if a in PASSTHROUGH else None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = _split_passthrough(argv)
    if passthrough is not None:
        argv, rest = passthrough
    try:
        argv, overrides = split_config_overrides(argv)
    except InputError as e:
        parser.error(str(e))
    args = parser.parse_args(argv)
    if overrides and not hasattr(args, "config"):
        parser.error(f"{args.command} takes no --config, so {overrides[0]} cannot apply")
    args.config_overrides = overrides
    if passthrough is not None:
        args.passthrough = rest
    if not args.no_compile_cache and compile_cache.enabled_by_env():
        compile_cache.enable()
    xla_flags.apply_cpu_defaults()
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"valueprobe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"valueprobe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
