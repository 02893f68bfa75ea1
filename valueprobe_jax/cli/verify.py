"""`valueprobe verify`: ask a judge model the paper's verification prompt (Q1-Q4, Yes/No, JSON)
about every row of a scenario file, greedily, and write the rows with its raw replies as their
Verification (the released file's format; readers keep rows with four Yes).

  valueprobe verify --model NAME --in FILE.jsonl --out FILE.jsonl [--limit N]

FILE.jsonl: JSON Lines with Value, Situation, ActionA, ActionB (Section and an old Verification
are optional), e.g. DIR/scenes.jsonl of `valueprobe synthesize` or the paper's released file.
Resumable: finished chunks of rows are kept in OUT.parts/ until OUT is written, so rerunning the
same command after an interruption continues where it stopped. `valueprobe synthesize` runs the
same check itself (its verification section); this command re-judges any file with any model."""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import pathlib
import shutil


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
    from valueprobe_jax.synthesis import pipeline as syn  # noqa: PLC0415
    from valueprobe_jax.errors import InputError  # noqa: PLC0415

    for name, value in (("--max-new-tokens", args.max_new_tokens), ("--batch", args.batch),
                        ("--chunk-size", args.chunk_size)):
        if value < 1:
            raise InputError(f"{name}={value}: must be >= 1")
    if args.limit < 0:
        raise InputError(f"--limit={args.limit}: must be >= 0 (0 = all)")
    inp, out = pathlib.Path(args.inp), pathlib.Path(args.out)
    if inp.resolve() == out.resolve():
        raise InputError(f"--out {out}: must differ from --in")
    rows = syn.read_scene_rows(inp)
    if args.limit:
        rows = rows[:args.limit]
    instruction = syn.verification_instruction(args.data_dir or None)
    parts = out.with_name(out.name + ".parts")
    manifest = {"in_sha256": hashlib.sha256(inp.read_bytes()).hexdigest(), "rows": len(rows),
                "model": args.model, "dtype": args.dtype, "max_new_tokens": args.max_new_tokens,
                "chunk_size": args.chunk_size}
    mpath = parts / "manifest.json"
    if mpath.exists() and json.loads(mpath.read_text()) != manifest:
        raise InputError(f"{parts}: holds chunks of another input or setting; delete it")
    syn.write_json_atomic(manifest, mpath)
    settings = syn.VerifySettings(max_new_tokens=args.max_new_tokens, batch=args.batch)
    judge = None
    replies: list[str] = []
    for c, start in enumerate(range(0, len(rows), args.chunk_size)):
        path = parts / f"chunk-{c:06d}.json"
        part = rows[start:start + args.chunk_size]
        if not path.exists():
            if judge is None:
                from valueprobe_jax.models.checkpoints import load_model  # noqa: PLC0415

                judge = syn.ChatModel(load_model(args.model, dtype=args.dtype))
            keys = [f"verify|{start + i}" for i in range(len(part))]
            syn.write_json_atomic(syn.verify_rows(judge, instruction, part, settings, keys=keys),
                                  path)
        got = json.loads(path.read_text())
        if len(got) != len(part):
            raise InputError(f"{path}: holds {len(got)} verdicts for {len(part)} rows; delete it")
        replies += got
        print(f"verified rows {start + 1}-{start + len(part)} of {len(rows)}")
    syn.write_jsonl_atomic([{**r, "Verification": v} for r, v in zip(rows, replies)], out)
    shutil.rmtree(parts)
    counts = collections.Counter(syn.status_counts(replies))
    print(f"{len(rows)} rows: {counts.pop('kept', 0)} with four Yes"
          + "".join(f", {n} {reason}" for reason, n in sorted(counts.items())) + f" -> {out}")
    return 0
