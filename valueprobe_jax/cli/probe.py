"""`valueprobe probe`: the main job — probe questions with the three methods and print, per
question, the token / seq / text distributions side by side."""

from __future__ import annotations

import argparse
import pathlib
import time

from valueprobe_jax.experiments import results
from valueprobe_jax.errors import InputError
from valueprobe_jax.probing.engine import ProbeEngine, ProbeSettings, build_probe_requests
from valueprobe_jax.data.selection import select_questions
from valueprobe_jax.probing.procedure import get_procedure
from valueprobe_jax.probing.prompts import parse_date, today
from valueprobe_jax.vocabulary import METHODS, PARSE_MODES, PROCEDURE_NAMES, STYLES


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="probe questions with the token, seq and text methods",
                       description=__doc__)
    p.add_argument("--model", default="smollm2-135m-instruct", help="registry name or checkpoint dir")
    p.add_argument("--styles", default=",".join(STYLES), help="comma list of prompt styles")
    p.add_argument("--variants", default="baseline", help="comma list of option variants")
    p.add_argument("--countries", default="", help="comma list of countries (empty: no country prompt)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {','.join(METHODS)}")
    p.add_argument("--samples", type=int, default=10, help="text-method samples per prompt (paper: 10)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--procedure", choices=PROCEDURE_NAMES, default="ours",
                   help="ours (default) or paper: the released code's parse mode, label lookup, "
                        "seq boundary and sampler (valueprobe_jax/probing/procedure.py); "
                        "--variants stays as given (the paper's: baseline,reverse,num)")
    p.add_argument("--parse-mode", choices=PARSE_MODES, default=None,
                   help="label_aware: the variant's own labels and option texts; paper: the "
                        "release's regex (default: the procedure's)")
    p.add_argument("--date-string", default="",
                   help="YYYY-MM-DD a dated chat template writes (default: today, recorded in each row)")
    p.add_argument("--strategy", default="auto",
                   help="auto (shared_prefill with the text method; else prefix_cache for a long "
                        "shared prefix, else packed) | shared_prefill | naive | padded | packed | "
                        "prefix_cache")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--mesh", default="", help='device mesh, e.g. "data=2,tensor=4"')
    q = p.add_mutually_exclusive_group()
    q.add_argument("--questions", default="", help='JSON list of {"id","question","options"}')
    q.add_argument("--max-questions", type=int, default=0, help="first N questions of the bank")
    p.add_argument("--data-dir", default="", help="local mirror of the paper's data (else VALUEPROBE_DATA_DIR or download)")
    p.add_argument("--out", required=True, help="output directory (writes results.parquet)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no per-question summary")
    p.set_defaults(func=run)


def _fmt(values, i: int) -> str:
    return "   -  " if values is None else f"{values[i]:6.3f}"


def print_summary(rows: list[dict], questions: dict) -> None:
    """Per question and prompt: each option with p_token, p_seq, p_text (canonical order)."""
    for qid in dict.fromkeys(r["qid"] for r in rows):
        q = questions[qid]
        print(f"\n{qid}: {q.question}")
        for r in (r for r in rows if r["qid"] == qid):
            where = f"{r['style']}/{r['variant']}" + (f"/{r['country']}" if r.get("country") else "")
            valid = sum(x is not None for x in r.get("parsed") or [])
            n = len(r.get("parsed") or [])
            text_note = f"  text parsed {valid}/{n}" if n else ""
            print(f"  [{where}]{text_note}")
            print(f"    {'option':<40} {'token':>6} {'seq':>6} {'text':>6}")
            for i, opt in enumerate(q.options):
                print(f"    {opt[:40]:<40} {_fmt(r.get('p_token'), i)} {_fmt(r.get('p_seq'), i)} "
                      f"{_fmt(r.get('p_text'), i)}")


def run(args: argparse.Namespace) -> int:
    from valueprobe_jax.models.checkpoints import load_model  # noqa: PLC0415 (heavy import)
    from valueprobe_jax.parallel.sharding import make_mesh  # noqa: PLC0415

    proc = get_procedure(args.procedure)
    if args.date_string:
        parse_date(args.date_string)
    settings = ProbeSettings(methods=tuple(_csv(args.methods)), samples=args.samples,
                             temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                             seed=args.seed, parse_mode=args.parse_mode or proc.parse_mode,
                             strategy=args.strategy, label_lookup=proc.label_lookup,
                             boundary=proc.boundary, sampler=proc.sampler,
                             date_string=args.date_string or today())
    if args.samples < 1 and "text" in settings.methods:
        raise InputError("--samples: must be >= 1 for the text method")
    questions = select_questions(data_dir=args.data_dir or None, questions_file=args.questions or None,
                                 max_questions=args.max_questions)
    countries = [None] + _csv(args.countries) if args.countries else [None]
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    mesh = make_mesh(args.mesh) if args.mesh else None
    t0 = time.time()
    model = load_model(args.model, dtype=args.dtype)
    requests = build_probe_requests(questions, _csv(args.styles), _csv(args.variants), countries,
                                    experiment="probe", model_name=model.name)
    engine = ProbeEngine(model, settings, mesh=mesh)
    t1 = time.time()
    rows = engine.probe_in_chunks(requests, progress=not args.quiet)
    path = out / "results.parquet"
    results.write_rows_atomic(rows, path)
    if not args.quiet:
        print_summary(rows, {q.id: q for q in questions})
    print(f"\n{len(rows)} probes of {len(questions)} questions in {time.time() - t1:.1f}s "
          f"(model load {t1 - t0:.1f}s)")
    print(f"Results: {path}")
    print(f"Open them: python -c \"import pyarrow.parquet as pq; "
          f"print(pq.read_table('{path}').to_pylist()[0])\"  (or .to_pandas() with pandas)")
    return 0
