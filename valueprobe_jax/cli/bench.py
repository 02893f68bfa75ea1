"""`valueprobe bench`: option-scoring strategies (naive, padded, packed, prefix_cache) on the same
WVS prompts, and ours against two PyTorch peers, each in its own process: the paper's HF-PyTorch
procedure (scoring and generation) and lm-evaluation-harness's HF backend (seq-method scoring at
its best batch size). The peers need the [bench] extra: pip install -e '.[bench]'.

Example (about 10 minutes on a quiet 2-core CPU with SmolLM2 before the lm-eval peer, which
times three batch sizes; under a load of 7 on 2 cores the whole run took about 50 minutes):
    valueprobe bench --model smollm2-135m-instruct --questions 8 --plot bench.png
"""

from __future__ import annotations

import argparse
import json
import sys

from valueprobe_jax import io
from valueprobe_jax.errors import InputError
from valueprobe_jax.vocabulary import STYLES


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              help="benchmark scoring strategies and the HF reference procedure")
    p.add_argument("--model", default="smollm2-135m-instruct", help="registry name or checkpoint")
    p.add_argument("--strategies", default="naive,padded,packed,prefix_cache",
                   help="comma-separated strategies (default: all four)")
    p.add_argument("--questions", type=int, default=8,
                   help="WVS questions to use, spread over option counts (default 8)")
    p.add_argument("--styles", default=",".join(STYLES),
                   help="comma-separated prompt styles (default: all three)")
    p.add_argument("--data-dir", help="paper data mirror (default: VALUEPROBE_DATA_DIR or download)")
    p.add_argument("--no-hf", action="store_true", help="skip the HF-PyTorch reference")
    p.add_argument("--no-lmeval", action="store_true",
                   help="skip lm-evaluation-harness's HF backend (HFLM)")
    p.add_argument("--lmeval-batch-sizes",
                   help="comma-separated HFLM batch sizes to time; the best is reported "
                   "(default 1,8,16)")
    p.add_argument("--torch-threads", type=int,
                   help="PyTorch threads of both peers (default: all cores; on a busy machine 1 "
                   "can be several times faster)")
    p.add_argument("--no-generation", action="store_true", help="skip the generation comparison")
    p.add_argument("--generation-prompts", type=int, default=24,
                   help="prompts for the generation comparison (default 24: all 8 x 3)")
    p.add_argument("--samples", type=int, default=10, help="samples per prompt (default 10)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="default 64")
    p.add_argument("--no-xla-cost", action="store_true",
                   help="skip XLA's cost and memory analysis (recompiles every shape)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", help="also write the JSON object to this file")
    p.add_argument("--plot", help="PNG: time per prompt vs number of options and vs prompt length "
                   "(runs extra per-group timings)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    # the bench loads jax, the model stack and (for --plot) matplotlib: only when it runs
    from valueprobe_jax.bench import strategies as bench  # noqa: PLC0415
    from valueprobe_jax.bench.plot import plot  # noqa: PLC0415
    from valueprobe_jax.bench.table import format_table  # noqa: PLC0415

    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    styles = tuple(s.strip() for s in args.styles.split(",") if s.strip())
    if not strategies:
        raise InputError("--strategies: empty")
    lm_sizes = {}
    if args.lmeval_batch_sizes is not None:
        try:
            lm_sizes["lmeval_batch_sizes"] = tuple(
                int(b) for b in args.lmeval_batch_sizes.split(",") if b.strip())
        except ValueError:
            raise InputError(f"--lmeval-batch-sizes {args.lmeval_batch_sizes!r}: give integers "
                             "separated by commas, e.g. 1,8,16") from None
    for n, name in ((args.samples, "--samples"), (args.max_new_tokens, "--max-new-tokens"),
                    (args.generation_prompts, "--generation-prompts"),
                    (1 if args.torch_threads is None else args.torch_threads, "--torch-threads")):
        if n < 1:
            raise InputError(f"{name} {n}: must be >= 1")
    opts = bench.BenchOptions(model=args.model, strategies=strategies, questions=args.questions,
                              styles=styles, data_dir=args.data_dir, hf=not args.no_hf,
                              lmeval=not args.no_lmeval, **lm_sizes,
                              torch_threads=args.torch_threads,
                              generation=not args.no_generation,
                              generation_prompts=args.generation_prompts, samples=args.samples,
                              max_new_tokens=args.max_new_tokens, groups=bool(args.plot),
                              xla=not args.no_xla_cost)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    result = bench.run_bench(opts, log=log)
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        io.write_text(args.out, text + "\n")
    if args.plot:
        plot(result, args.plot)
    print(text if args.json else format_table(result))
    return 0
