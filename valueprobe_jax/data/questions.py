"""The question bank: the paper's 206 WVS-7 questions (or a user's own file), each with its
WVS-7 thematic section.

The paper's bank is read from ``input_dict.json`` of the paper's repository (template0): the
question text is what lies between "Question: " and "\\nOptions:" of the rendered user turn, the
options are the "options" entries without their "A. " labels, in source order. Source quirks stay
as the paper used them ("Monly", "9.0", double spaces, the curly apostrophe of "Don’t mind");
prompts transliterate to ASCII when they render.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from valueprobe_jax.data import sources
from valueprobe_jax.errors import InputError

# The 13 thematic sections of the WVS-7 master questionnaire, by question number
# (demography, Q260-Q290, is not a value section). Q234A belongs to Q234's section.
SECTIONS: tuple[tuple[int, str, int, int], ...] = (
    (1, "Social Values, Attitudes & Stereotypes", 1, 45),
    (2, "Happiness and Well-being", 46, 56),
    (3, "Social Capital, Trust & Organizational Membership", 57, 105),
    (4, "Economic Values", 106, 111),
    (5, "Corruption", 112, 120),
    (6, "Migration", 121, 130),
    (7, "Security", 131, 151),
    (8, "Postmaterialist Index", 152, 157),
    (9, "Science & Technology", 158, 163),
    (10, "Religious Values", 164, 175),
    (11, "Ethical Values and Norms", 176, 198),
    (12, "Political Interest & Political Participation", 199, 234),
    (13, "Political Culture & Political Regimes", 235, 259),
)
SECTION_NAMES = {number: name for number, name, _, _ in SECTIONS}

MAX_OPTIONS = 10  # labels A-J, a-j, 0-9

_QID = re.compile(r"^Q(\d+)[A-Z]?$")


def section_of(qid: str) -> int | None:
    """WVS-7 section number (1-13) of a question id such as "Q27" or "Q234A"; None otherwise."""
    m = _QID.match(qid)
    if not m:
        return None
    n = int(m.group(1))
    for number, _, first, last in SECTIONS:
        if first <= n <= last:
            return number
    return None


@dataclasses.dataclass(frozen=True)
class Question:
    """One survey question: options in canonical (questionnaire) order."""

    id: str
    question: str
    options: tuple[str, ...]
    section: int | None = None

    @property
    def section_name(self) -> str | None:
        return SECTION_NAMES.get(self.section) if self.section else None

    def to_json(self) -> dict:
        return {"id": self.id, "question": self.question, "options": list(self.options)}


def section_counts(questions: list[Question]) -> dict[int, int]:
    """Number of questions per section number (sections with none are left out)."""
    counts: dict[int, int] = {}
    for q in questions:
        if q.section is not None:
            counts[q.section] = counts.get(q.section, 0) + 1
    return dict(sorted(counts.items()))


def questions_from_input_dict(obj: dict, *, name: str = "input_dict.json") -> list[Question]:
    """Parse the paper's input_dict (its template0 part) into the question bank."""
    try:
        entries = obj["template0"]
    except (KeyError, TypeError):
        raise InputError(f"{name}: no 'template0' mapping") from None
    out = []
    for qid, entry in entries.items():
        try:
            user = next(m["content"] for m in entry["input"] if m["role"] == "user")
            raw_options = entry["options"]
        except (KeyError, TypeError, StopIteration):
            raise InputError(f"{name}: entry {qid} has no user message or options") from None
        start, end = user.find("Question: "), user.find("\nOptions:")
        if start != 0 or end < 0:
            raise InputError(f"{name}: entry {qid} does not start 'Question: ... \\nOptions:'")
        options = []
        for i, opt in enumerate(raw_options):
            label = chr(ord("A") + i) + ". "
            if not opt.startswith(label):
                raise InputError(f"{name}: entry {qid} option {i} does not start {label!r}")
            options.append(opt[len(label):])
        out.append(Question(qid, user[len("Question: "):end], tuple(options), section_of(qid)))
    return out


def load_question_bank(data_dir: str | os.PathLike | None = None, *,
                       download: bool = True) -> list[Question]:
    """The paper's 206 questions, from a mirror directory or the pinned public source."""
    path = sources.source_file(sources.INPUT_DICT, data_dir, download=download)
    with open(path, encoding="utf-8") as f:
        return questions_from_input_dict(json.load(f), name=str(path))


def validate_questions(items: object, *, name: str) -> list[Question]:
    """Check a JSON list of {"id", "question", "options"} and return Questions."""
    if not isinstance(items, list) or not items:
        raise InputError(f"{name}: expected a non-empty JSON list of questions")
    seen: set[str] = set()
    out = []
    for i, item in enumerate(items):
        where = f"{name}: question #{i}"
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected an object with id, question, options")
        missing = [k for k in ("id", "question", "options") if k not in item]
        if missing:
            raise InputError(f"{where}: missing {', '.join(missing)}")
        qid, text, options = item["id"], item["question"], item["options"]
        if not isinstance(qid, str) or not qid.strip():
            raise InputError(f"{where}: id must be a non-empty string")
        where = f"{name}: question {qid}"
        if qid in seen:
            raise InputError(f"{where}: duplicate id")
        seen.add(qid)
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{where}: question must be a non-empty string")
        if (not isinstance(options, list) or len(options) < 2
                or not all(isinstance(o, str) and o.strip() for o in options)):
            raise InputError(f"{where}: options must be a list of at least 2 non-empty strings")
        if len(options) > MAX_OPTIONS:
            raise InputError(f"{where}: {len(options)} options, more than the {MAX_OPTIONS} "
                             "labels (A-J, a-j, 0-9)")
        out.append(Question(qid, text, tuple(options), section_of(qid)))
    return out


def load_questions_file(path: str | os.PathLike) -> list[Question]:
    """A user's question file: a JSON list of {"id", "question", "options"}."""
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return validate_questions(items, name=str(path))
