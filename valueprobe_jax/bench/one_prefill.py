"""Tokens run through the model by ``ProbeEngine.probe`` with all three methods: the two-prefill
path (a scorer strategy, then ``Sampler.generate``) against ``shared_prefill`` (one prefill per
prompt), from the engine's own counters, with the largest differences between their results.

    python -m valueprobe_jax.bench.one_prefill [--questions 8] [--samples 10] [--max-new-tokens 64]

Counts are token slots with their padding: prefill (``SamplerStats.prefill_tokens``), scoring
(``ScoreStats.tokens_processed``) and decode (``SamplerStats.row_steps``, one token per busy row
per step). They do not depend on the machine; no wall time is reported.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np

from valueprobe_jax.bench.strategies import pick_questions
from valueprobe_jax.data.questions import load_question_bank
from valueprobe_jax.models.checkpoints import load_model
from valueprobe_jax.probing.engine import ProbeEngine, ProbeSettings, build_probe_requests

STYLES = ("default", "prefixed", "one_shot")


def run_counts(model: Any, requests: Sequence[Any], strategy: str,
               **settings: Any) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """One ``probe`` call under ``strategy``: its token counts and rows."""
    engine = ProbeEngine(model, ProbeSettings(strategy=strategy, **settings))
    rows = engine.probe(requests)
    sc, sa = engine.scorer.stats, engine.sampler.last_stats
    counts = {"strategy": engine.last_strategy, "prefill_tokens": sa.prefill_tokens,
              "prefill_rows": sa.prefill_rows, "scoring_tokens": sc.tokens_processed,
              "scoring_tokens_real": sc.tokens_real, "decode_row_steps": sa.row_steps}
    counts["total"] = (counts["prefill_tokens"] + counts["scoring_tokens"]
                       + counts["decode_row_steps"])
    return counts, rows


def row_differences(rows: Sequence[dict], ref: Sequence[dict]) -> dict[str, Any]:
    """Largest |difference| of each raw column, whether p-vector argmaxes and texts agree."""
    out: dict[str, Any] = {}
    for col in ("token_logits", "token_logits_space", "option_logprob", "p_token", "p_seq"):
        out[col] = max(float(np.abs(np.subtract(a[col], b[col])).max())
                       for a, b in zip(rows, ref, strict=True))
    out["argmax_equal"] = all(np.argmax(a[c]) == np.argmax(b[c]) for a, b in zip(rows, ref)
                              for c in ("p_token", "p_seq"))
    out["generations_equal"] = all(a["generations"] == b["generations"] for a, b in zip(rows, ref))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args(argv)
    model = load_model(args.model)
    questions = pick_questions(load_question_bank(), args.questions)
    requests = build_probe_requests(questions, STYLES, ["baseline"], [None], experiment="probe",
                                    model_name=model.name)
    settings = dict(samples=args.samples, max_new_tokens=args.max_new_tokens)
    print(f"{len(requests)} prompts ({len(questions)} questions x {len(STYLES)} styles x "
          f"baseline), methods token seq text, {args.samples} x {args.max_new_tokens} samples")
    results = {s: run_counts(model, requests, s, **settings)
               for s in ("packed", "prefix_cache", "shared_prefill")}
    cols = ("prefill_tokens", "scoring_tokens", "decode_row_steps", "total")
    print(f"{'path':<28}" + "".join(f"{c:>18}" for c in cols))
    for name, (counts, _) in results.items():
        label = name if name == "shared_prefill" else f"{name} + generate"
        print(f"{label:<28}" + "".join(f"{counts[c]:>18}" for c in cols))
    shared = results["shared_prefill"][0]
    for name in ("packed", "prefix_cache"):
        before = results[name][0]
        print(f"vs {name}: {before['total'] - shared['total']} fewer tokens "
              f"({before['total'] / shared['total']:.3f}x), prefill + scoring "
              f"{before['prefill_tokens'] + before['scoring_tokens']} -> "
              f"{shared['prefill_tokens'] + shared['scoring_tokens']}")
    print("shared_prefill vs packed:", row_differences(results["shared_prefill"][1],
                                                       results["packed"][1]))


if __name__ == "__main__":
    main()
