"""The value-action scenarios (the paper's released file, or one in the same JSON Lines format made
by `valueprobe synthesize`), filtered by their four verification verdicts.

Each row is {Value, Situation, ActionA, ActionB, Verification, Section}. Value holds a WVS
question and its two opposite answers ("<question>\\nPerson A: <answer>\\nPerson B: <answer>\\n").
Verification is a judge model's raw reply to four Yes/No questions (Q1-Q4), asked for as JSON but
not always JSON: unquoted Yes, doubled quotes (""Q1""), extra spaces, trailing commas. Rows are kept
when all four verdicts are Yes; everything dropped is counted by reason.

Two readings of a verdict: "lenient" (ours, the default) reads the Yes/No words wherever the reply
spells them; "strict" is the paper's (src/construct_inputs.py, get_action_agreement_input): the
reply must parse with ``json.loads`` and its Q1..Q4 must equal the string "Yes" exactly.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re

from valueprobe_jax.data import sources
from valueprobe_jax.data.questions import Question, load_question_bank, section_of
from valueprobe_jax.data.transliterate import to_ascii
from valueprobe_jax.errors import InputError

VERDICT_KEYS = ("Q1", "Q2", "Q3", "Q4")

# A key (any quoting, any case) then a colon then a Yes/No word (quoted or not).
_VERDICT_PAIR = re.compile(
    r"""\b(Q\d+)\b["'`\s]*:\s*["'`]*\s*(yes|no|true|false)\b""", re.IGNORECASE)
_TRUE = {"yes", "true"}

# Reasons a row is dropped, in the order they are checked.
BAD_ROW = "bad_row"              # the line is not a JSON object with the six fields
BAD_VALUE = "bad_value"          # Value lacks "Person A:" / "Person B:"
UNPARSEABLE = "unparseable_verdict"
MISSING_KEYS = "missing_verdict_keys"
NOT_ALL_YES = "not_all_yes"


def parse_verdict(text: object) -> dict[str, bool] | None:
    """The Yes/No verdicts found in a judge's reply, as {"Q1": True, ...}.

    Tolerates non-JSON replies: unquoted or doubled-quoted keys and values, spaces, trailing
    commas, text around the object. Keys that are absent are left out of the result. Returns None
    when no verdict can be read or one key has contradicting verdicts.
    """
    if not isinstance(text, str):
        return None
    found: dict[str, bool] = {}
    for key, word in _VERDICT_PAIR.findall(text):
        key, value = key.upper(), word.lower() in _TRUE
        if found.get(key, value) != value:
            return None
        found[key] = value
    return found or None


VERDICT_MODES = ("lenient", "strict")


def strict_verdict_status(text: object, keys: tuple[str, ...] = VERDICT_KEYS) -> str:
    """The paper's rule: ``json.loads(text)`` is an object whose keys are all exactly "Yes"."""
    try:
        verdict = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return UNPARSEABLE
    if not isinstance(verdict, dict):
        return UNPARSEABLE
    if any(k not in verdict for k in keys):
        return MISSING_KEYS
    if not all(verdict[k] == "Yes" for k in keys):
        return NOT_ALL_YES
    return "kept"


def verdict_status(text: object, keys: tuple[str, ...] = VERDICT_KEYS, *,
                   verdicts: str = "lenient") -> str:
    """'kept' when every key is Yes, else the reason the row is dropped (``verdicts``: lenient
    reading, or the paper's strict ``json.loads``)."""
    if verdicts == "strict":
        return strict_verdict_status(text, keys)
    if verdicts != "lenient":
        raise InputError(f"verdicts: expected one of {', '.join(VERDICT_MODES)}, got {verdicts!r}")
    verdict = parse_verdict(text)
    if verdict is None:
        return UNPARSEABLE
    if any(k not in verdict for k in keys):
        return MISSING_KEYS
    if not all(verdict[k] for k in keys):
        return NOT_ALL_YES
    return "kept"


_VALUE = re.compile(r"^(?P<q>.*?)\s*\nPerson A:\s*(?P<a>.*?)\s*\nPerson B:\s*(?P<b>.*?)\s*$", re.S)


def parse_value(value: str) -> tuple[str, str, str] | None:
    """(question, answer of person A, answer of person B) from a Value string, or None."""
    m = _VALUE.match(value) if isinstance(value, str) else None
    return (m["q"], m["a"], m["b"]) if m else None


@dataclasses.dataclass(frozen=True)
class Scenario:
    row: int            # 0-based line number in the source file
    qid: str | None     # question-bank id whose text matches the Value's question, if any
    section: int | None
    question: str       # as in the file (not transliterated)
    answer_a: str
    answer_b: str
    situation: str
    action_a: str
    action_b: str
    verification: str   # the judge's raw reply
    value: str          # the raw Value field

    @property
    def id(self) -> str:
        """Stable id within its file: "r" + the line number."""
        return f"r{self.row}"


@dataclasses.dataclass
class ScenarioReport:
    total: int = 0
    kept: int = 0
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    kept_matched: int = 0                 # kept rows whose question is in the bank
    unmatched_questions: list[str] = dataclasses.field(default_factory=list)  # kept, not in bank
    section_mismatches: int = 0           # matched rows whose Section differs from the bank's
    # bank texts shared by several ids (the paper's Q49/Q50): rows go to the last id, as the
    # paper's text->id dict did
    ambiguous_texts: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"{self.total} rows: {self.kept} kept (all four verdicts Yes), "
               f"{self.total - self.kept} dropped"]
        out += [f"  dropped {n}: {reason}" for reason, n in sorted(self.dropped.items())]
        out.append(f"  kept rows matching a bank question: {self.kept_matched}; "
                   f"kept questions not in the bank: {len(self.unmatched_questions)}")
        for ids in self.ambiguous_texts.values():
            out.append(f"  {'/'.join(ids)} share one question text: rows go to {ids[-1]}")
        if self.section_mismatches:
            out.append(f"  rows whose Section differs from the bank's: {self.section_mismatches}")
        return out


def _match_key(text: str) -> str:
    return " ".join(to_ascii(text).split())


def load_scenarios(data_dir: str | os.PathLike | None = None, *,
                   path: str | os.PathLike | None = None,
                   questions: list[Question] | None = None, download: bool = True,
                   verdicts: str = "lenient") -> tuple[list[Scenario], ScenarioReport]:
    """Rows with four Yes verdicts, mapped to question ids, and a report of what was dropped.

    `verdicts`: "lenient" (ours: Yes/No read however the reply spells it) or "strict" (the
    paper's: ``json.loads`` must succeed and Q1..Q4 equal "Yes").
    `path` is a JSON Lines file in the released format; by default the paper's released file
    (from the mirror or the pinned source). `questions` is the bank to match against (default:
    the paper's 206 questions, from the same data directory).
    """
    if verdicts not in VERDICT_MODES:
        raise InputError(f"verdicts: expected one of {', '.join(VERDICT_MODES)}, got {verdicts!r}")
    if path is None:
        path = sources.source_file(sources.SCENARIOS, data_dir, download=download)
    if questions is None:
        questions = load_question_bank(data_dir, download=download)
    by_text: dict[str, str] = {}
    ids_of_text: dict[str, list[str]] = {}
    for q in questions:
        by_text[_match_key(q.question)] = q.id
        ids_of_text.setdefault(q.question, []).append(q.id)
    report = ScenarioReport()
    report.ambiguous_texts = {t: ids for t, ids in ids_of_text.items() if len(ids) > 1}
    dropped: collections.Counter = collections.Counter()
    unmatched: dict[str, None] = {}
    kept = []
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    with f:
        for row, line in enumerate(f):
            if not line.strip():
                continue
            report.total += 1
            try:
                rec = json.loads(line)
                fields = [rec[k] for k in ("Value", "Situation", "ActionA", "ActionB")]
                verification = rec["Verification"]
                if not all(isinstance(x, str) for x in fields):
                    raise TypeError
            except (json.JSONDecodeError, KeyError, TypeError):
                dropped[BAD_ROW] += 1
                continue
            parsed = parse_value(fields[0])
            if parsed is None:
                dropped[BAD_VALUE] += 1
                continue
            status = verdict_status(verification, verdicts=verdicts)
            if status != "kept":
                dropped[status] += 1
                continue
            question, answer_a, answer_b = parsed
            qid = by_text.get(_match_key(question))
            section = rec.get("Section")
            if qid is None:
                unmatched[question] = None
            else:
                report.kept_matched += 1
                if section is not None and section != section_of(qid):
                    report.section_mismatches += 1
            kept.append(Scenario(row, qid, section if isinstance(section, int) else None,
                                 question, answer_a, answer_b, fields[1], fields[2], fields[3],
                                 str(verification), fields[0]))
    report.kept = len(kept)
    report.dropped = dict(dropped)
    report.unmatched_questions = list(unmatched)
    return kept, report


def select_for_rating(scenarios: list[Scenario], limit: int = 10) -> list[Scenario]:
    """The first `limit` kept scenarios of each bank question, in file order (the paper: 10)."""
    counts: collections.Counter = collections.Counter()
    out = []
    for s in scenarios:
        if s.qid is None or counts[s.qid] >= limit:
            continue
        counts[s.qid] += 1
        out.append(s)
    return out


def scenarios_by_qid(scenarios: list[Scenario],
                     limit: int | None = 10) -> dict[str, list[Scenario]]:
    """Bank question id -> its first `limit` kept scenarios (all when None), in file order."""
    out: dict[str, list[Scenario]] = {}
    for s in scenarios:
        if s.qid is not None and (limit is None or len(out.get(s.qid, ())) < limit):
            out.setdefault(s.qid, []).append(s)
    return out
