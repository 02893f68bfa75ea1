"""`valueprobe verify`: ask a judge model the paper's verification prompt (Q1-Q4, Yes/No, JSON)
about every row of a scenario file, greedily, and write the rows with its raw replies as their
Verification (the released file's format; readers keep rows with four Yes).

  valueprobe verify --model NAME --in FILE.jsonl --out FILE.jsonl [--limit N]

FILE.jsonl: JSON Lines with Value, Situation, ActionA, ActionB (Section and an old Verification
are optional), e.g. DIR/scenes.jsonl of `valueprobe synthesize` or the paper's released file.
Resumable: finished chunks of rows are kept in OUT.parts/ until OUT is written, so rerunning the
same command after an interruption continues where it stopped (OUT may be gs://...). On SIGTERM
the chunk in hand is finished and written, a resume hint is printed and the exit code is 143.
`valueprobe synthesize` runs the same check itself (its verification section); this command
re-judges any file with any model."""

from __future__ import annotations

import argparse
import collections
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="judge scenario rows with the paper's Q1-Q4 prompt",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the judge: registry name or checkpoint dir")
    p.add_argument("--in", dest="inp", metavar="FILE", required=True,
                   help="JSON Lines scenario file")
    p.add_argument("--out", metavar="FILE", required=True, help="output JSON Lines file")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--max-new-tokens", type=int, default=48, help="tokens of the verdict reply")
    p.add_argument("--batch", type=int, default=8, help="rows per model call")
    p.add_argument("--chunk-size", type=int, default=32, help="rows per resumable chunk")
    p.add_argument("--limit", type=int, default=0, help="only the first N rows (0 = all)")
    p.add_argument("--data-dir", default="", help="mirror of the paper's data (verification.txt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from valueprobe_jax.experiments import store  # noqa: PLC0415
    from valueprobe_jax.synthesis.verify import verify_file  # noqa: PLC0415

    try:
        counts = collections.Counter(verify_file(
            args.inp, args.out, model=args.model, dtype=args.dtype,
            max_new_tokens=args.max_new_tokens, batch=args.batch, chunk_size=args.chunk_size,
            limit=args.limit, data_dir=args.data_dir or None))
    except store.Stopped as e:
        print(e.hint("valueprobe verify"), file=sys.stderr)
        return store.STOPPED_EXIT_CODE
    n = sum(counts.values())
    print(f"{n} rows: {counts.pop('kept', 0)} with four Yes"
          + "".join(f", {n} {reason}" for reason, n in sorted(counts.items())) + f" -> {args.out}")
    return 0
