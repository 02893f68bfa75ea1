"""The paper's published numbers and the settings of its released metric code, as data.

Sources: Shen et al., "Revisiting LLM Value Probing Strategies" (EMNLP 2025), appendix tables,
and its public repository shensq/Revisiting-LLM-Value-Probing-Strategies at commit 339b4db
(src/compute_metrics.py, src/eval_utils.py, scripts/run_exp1.sh, run_exp2.sh), as collected in
the project's PAPER_FACTS.md. The report prints these beside our own numbers; nothing here is
computed.
"""

from __future__ import annotations

import collections
import json
import os

from valueprobe_jax.data.questions import SECTIONS, Question, section_of

# Table 2: Pearson r (p-value) across the paper's models between prompt robustness and
# selection bias, per method and metric. The p-values imply n = 13 points (scripts/run_exp1.sh).
TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "token": {"mismatch": (0.899, 2.951e-5), "js": (0.526, 0.065)},
    "seq": {"mismatch": (0.645, 0.017), "js": (0.893, 4.021e-5)},
    "text": {"mismatch": (0.933, 3.372e-6), "js": (0.885, 5.732e-5)},
}
TABLE2_N_MODELS = 13

# Table 3 as printed: questions per WVS-7 section in the 206-question subset.
TABLE3_PRINTED: dict[int, int] = {1: 24, 2: 10, 3: 45, 4: 5, 5: 9, 6: 10, 7: 13, 8: 0, 9: 6,
                                  10: 7, 11: 22, 12: 36, 13: 19}
TABLE3_TOTAL = 206

# The released metric code (compute_metrics.py): option variants, demographic countries.
RELEASE_VARIANTS = ("baseline", "reverse", "num")
RELEASE_COUNTRIES = ("China", "Egypt", "Germany", "Mexico", "United States")
RELEASE_TEXT_SAMPLES = 10  # num_return_sequences of run_inference.py

TOKEN_SET_TEXT = ("choosing one token set alone (\"A\" or \" A\") can give a mismatch rate "
                  "over 0.5 between the two (e.g. Bloomz); the paper therefore sums both")


def is_release_instruct(model: str) -> bool:
    """The release's model filter for value-action (compute_metrics.evaluate_action_correlation):
    `"instruct" in name.lower()`, which leaves out bloomz-7b1."""
    return "instruct" in model.lower()


def section_count_table(qids) -> dict[int, int]:
    """Questions per WVS-7 section (questionnaire ranges, data.questions.section_of), every
    section listed (0 where none)."""
    counts = collections.Counter(section_of(q) for q in qids)
    return {number: counts.get(number, 0) for number, *_ in SECTIONS}


def released_section_field(questions: list[Question], data_dir: str | os.PathLike | None = None,
                           *, download: bool = False) -> dict[str, int]:
    """qid -> the Section field of the released value-action file (every row, whatever its
    verdict), for the bank questions the file's Value texts match; questions it does not cover
    are absent. A qid whose rows disagree gets its most frequent Section."""
    from valueprobe_jax.data import sources
    from valueprobe_jax.data.scenarios import _match_key, parse_value

    path = sources.source_file(sources.SCENARIOS, data_dir, download=download)
    by_text = {_match_key(q.question): q.id for q in questions}
    seen: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
                parsed = parse_value(rec["Value"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            qid = by_text.get(_match_key(parsed[0])) if parsed else None
            if qid is not None and isinstance(rec.get("Section"), int):
                seen[qid][rec["Section"]] += 1
    return {q: c.most_common(1)[0][0] for q, c in seen.items()}
