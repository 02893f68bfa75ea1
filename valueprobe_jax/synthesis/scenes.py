"""Scenes out of a generated reply: a tolerant parser of the "Situation_i: / ActionA_i: /
ActionB_i:" layout, and the selection that keeps up to `scenes_per_question` valid, unique scenes
per question and counts every dropped one by reason (scenes parsed = kept + sum(dropped)).

Near duplicates: two situations of one question are duplicates when the Jaccard similarity of
their content-word sets (lower-cased ASCII words, minus a small stop-word list and "PersonX") is
>= `dedup_threshold` (default 0.6). Among the released scenes of each question the largest such
similarity is 0.42, so the default never merges two of the paper's distinct scenes, while a
reworded copy ("PersonX's friend asks for a loan" / "A friend asks PersonX for a loan") is caught.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from valueprobe_jax.data.transliterate import to_ascii
from valueprobe_jax.errors import InputError
from valueprobe_jax.synthesis.prompt import EXAMPLE_SCENES, Scene

# A field label at the start of a line: optional bullets / heading marks / "1." / bold, then
# Situation (or Scenario) / ActionA / Action A / Action_B ..., an optional number ("_1", " 1",
# "1", "#1"), optional closing bold, and a colon (or ".", ")" or "-" after a number).
_LABEL = re.compile(
    r"""^[ \t]*(?:[-*+>#]+[ \t]*)*(?:(?P<lead>\d+)[.)][ \t]*)?(?:[-*+>#]+[ \t]*)*[*_]*[ \t]*
        (?P<kind>situation|scenario|action[ \t]*[-_]?[ \t]*(?P<ab>[ab]))
        (?![a-z])
        (?:[ \t]*[-_#]?[ \t]*(?P<num>\d+))?
        [ \t]*[*_]*[ \t]*
        (?P<sep>:|(?<=\d)[ \t]*[.)\-])
        [ \t]*[*_]*[ \t]*(?P<rest>.*)$""",
    re.IGNORECASE | re.VERBOSE)
# Another "Word(s):" label (Value:, Note:, Explanation:): ends the current field, is ignored.
_OTHER_LABEL = re.compile(r"^[ \t]*[-*#>]*[ \t]*[*_]*[A-Z][A-Za-z0-9 ]{0,29}[*_]*[ \t]*:")
# Several labels run together on one line ("Situation_1: ... ActionA_1: ..."): split them before
# a later label that is capitalised or numbered (so prose such as "the situation: ..." stays).
_INLINE_LABEL = re.compile(
    r"[ \t]+(?=[*_]*(?:(?:Situation|Scenario|Action[ \t]*[-_]?[ \t]*[AB])(?![a-z])"
    r"[ \t]*[-_#]?[ \t]*\d*"
    r"|(?i:situation|scenario|action[ \t]*[-_]?[ \t]*[ab])[ \t]*[-_#]?[ \t]*\d+)"
    r"[ \t]*[*_]*[ \t]*:)")


@dataclasses.dataclass
class ParsedScene:
    """One scene as found in a reply; fields are "" when missing."""

    number: int | None = None  # the number on its Situation label, if any
    situation: str = ""
    action_a: str = ""
    action_b: str = ""
    truncated: bool = False    # the reply hit the token limit inside this scene
    last_line: int = -1        # index of the last reply line that belongs to this scene

    def scene(self) -> Scene:
        return Scene(self.situation, self.action_a, self.action_b)


def clean_field(text: str) -> str:
    """Field text without markdown emphasis, wrapping quotes or brackets, and extra spaces."""
    text = " ".join(text.replace("**", " ").replace("__", " ").split())
    for _ in range(2):
        text = text.strip(" \t*_")
        if len(text) >= 2 and text[0] + text[-1] in ('""', "''", "\u201c\u201d", "[]", "()"):
            text = text[1:-1].strip()
    return text


def _has_words(text: str) -> bool:
    return re.search(r"[A-Za-z0-9]", text) is not None


def _split_lines(text: str) -> list[str]:
    """Lines of a reply, a line that holds several labels cut before each later label."""
    out = []
    for line in text.split("\n"):
        m = _LABEL.match(line)
        if m:
            head, rest = line[:m.start("rest")], line[m.start("rest"):]
            out.extend((head + _INLINE_LABEL.sub("\n", rest)).split("\n"))
        else:
            out.append(line)
    return out


def parse_scenes(text: str, *, stopped_by_length: bool = False) -> list[ParsedScene]:
    """Scenes in a generated reply, in order.

    A Situation label always opens a scene; an ActionA label fills the open scene if it has no
    ActionA yet, an ActionB label if it has no ActionB (either order), otherwise either opens a
    new scene (which then lacks its situation). Numbers are read but not trusted for grouping
    (models skip and repeat them). A field's text is the rest of its line plus the following
    lines up to a blank line or the next label; a label alone on its line takes the next
    non-blank line. Other "Word:" lines and text after a blank line are ignored. With
    `stopped_by_length` (the reply hit max_new_tokens), the last scene is marked truncated when
    it is incomplete or the reply ends inside it without a newline.
    """
    lines = _split_lines(text)
    scenes: list[ParsedScene] = []
    current: ParsedScene | None = None
    field: str | None = None   # attribute of `current` receiving continuation lines
    open_field = False         # whether continuation lines may still be appended
    for i, line in enumerate(lines):
        m = _LABEL.match(line)
        if m:
            kind = m["kind"].lower()
            attr = ("situation" if not m["ab"] else
                    "action_a" if m["ab"].lower() == "a" else "action_b")
            if kind in ("situation", "scenario"):
                current = None
            elif current is not None and attr == "action_a" and current.action_a:
                current = None
            elif current is not None and attr == "action_b" and current.action_b:
                current = None
            if current is None:
                current = ParsedScene()
                scenes.append(current)
            if attr == "situation" and (m["num"] or m["lead"]):
                current.number = int(m["num"] or m["lead"])
            setattr(current, attr, m["rest"].strip())
            current.last_line = i
            field, open_field = attr, True
            continue
        if not line.strip():
            if current is not None and field and getattr(current, field):
                open_field = False
            continue
        if _OTHER_LABEL.match(line):
            field, open_field = None, False
            continue
        if current is not None and field and (open_field or not getattr(current, field)):
            prev = getattr(current, field)
            setattr(current, field, f"{prev} {line.strip()}" if prev else line.strip())
            current.last_line = i
            open_field = True
    for s in scenes:
        s.situation, s.action_a, s.action_b = (clean_field(s.situation), clean_field(s.action_a),
                                               clean_field(s.action_b))
    if stopped_by_length and scenes:
        last = scenes[-1]
        incomplete = not all(_has_words(x) for x in (last.situation, last.action_a, last.action_b))
        final_line = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
        ends_inside = last.last_line == final_line and not text.endswith("\n")
        last.truncated = incomplete or ends_inside
    return scenes


# ------------------------------------------------------------------------------ selection

# Reasons a parsed scene is not kept, in the order they are checked.
TRUNCATED = "truncated"                    # cut off by max_new_tokens
MISSING_FIELD = "missing_field"            # no situation, ActionA or ActionB (or no words in it)
SITUATION_TOO_LONG = "situation_too_long"  # more words than the prompt allows
ACTION_TOO_LONG = "action_too_long"
SAME_ACTIONS = "same_actions"              # ActionA and ActionB say the same
COPIES_EXAMPLE = "copies_example"          # a near copy of the prompt's few-shot example
NEAR_DUPLICATE = "near_duplicate"          # a near copy of a scene kept before it
OVER_LIMIT = "over_limit"                  # unique and valid, but scenes_per_question were kept
DROP_REASONS = (TRUNCATED, MISSING_FIELD, SITUATION_TOO_LONG, ACTION_TOO_LONG, SAME_ACTIONS,
                COPIES_EXAMPLE, NEAR_DUPLICATE, OVER_LIMIT)
KEPT = "kept"

_STOP_WORDS = frozenset(
    "a an the to of and or in on at for with by from is are was be been their they them his her "
    "its it as that this than into over about while during after before who has have personx"
    .split())


def word_count(text: str) -> int:
    """Words as the prompt's limit counts them: whitespace-separated pieces."""
    return len(text.split())


def content_words(text: str) -> frozenset[str]:
    """Lower-cased ASCII words of a text minus stop words and "PersonX" (for near duplicates)."""
    words = re.findall(r"[a-z0-9]+", to_ascii(text).lower().replace("'s", ""))
    return frozenset(w for w in words if w not in _STOP_WORDS)


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the content-word sets of two texts (1.0 for two empty sets)."""
    wa, wb = content_words(a), content_words(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


@dataclasses.dataclass(frozen=True)
class SelectionSettings:
    """How scenes are filtered (the generation section of the synthesis config)."""

    scenes_per_question: int = 10
    max_situation_words: int = 25
    max_action_words: int = 20
    dedup_threshold: float = 0.6
    example_situations: tuple[str, ...] = tuple(s.situation for s in EXAMPLE_SCENES)

    def __post_init__(self) -> None:
        if self.scenes_per_question < 1:
            raise InputError(f"scenes_per_question={self.scenes_per_question}: must be >= 1")
        if self.max_situation_words < 1 or self.max_action_words < 1:
            raise InputError("word limits: must be >= 1")
        if not 0 < self.dedup_threshold <= 1:
            raise InputError(f"dedup_threshold={self.dedup_threshold}: must be in (0, 1]")


def scene_status(scene: ParsedScene, kept: Sequence[Scene], settings: SelectionSettings) -> str:
    """KEPT or the first reason (DROP_REASONS order) this scene is not kept, given the scenes
    already kept for its question."""
    if scene.truncated:
        return TRUNCATED
    if not all(_has_words(x) for x in (scene.situation, scene.action_a, scene.action_b)):
        return MISSING_FIELD
    if word_count(scene.situation) > settings.max_situation_words:
        return SITUATION_TOO_LONG
    if max(word_count(scene.action_a), word_count(scene.action_b)) > settings.max_action_words:
        return ACTION_TOO_LONG
    if content_words(scene.action_a) == content_words(scene.action_b):
        return SAME_ACTIONS
    if any(similarity(scene.situation, ex) >= settings.dedup_threshold
           for ex in settings.example_situations):
        return COPIES_EXAMPLE
    if any(similarity(scene.situation, k.situation) >= settings.dedup_threshold for k in kept):
        return NEAR_DUPLICATE
    if len(kept) >= settings.scenes_per_question:
        return OVER_LIMIT
    return KEPT


@dataclasses.dataclass(frozen=True)
class Sample:
    """One generated reply (the assistant prefix, if any, already put back in front)."""

    text: str
    finish_reason: str = "eos"  # "eos" | "end_of_turn" | "length"


def select_scenes(samples: Sequence[Sample], settings: SelectionSettings
                  ) -> list[dict[str, Any]]:
    """Every scene parsed from a question's samples, in order, with its status: a record
    {sample, index, number, situation, action_a, action_b, status}. The first valid, unique
    scenes (sample order, then reply order) up to scenes_per_question have status "kept"."""
    kept: list[Scene] = []
    out = []
    for si, sample in enumerate(samples):
        parsed = parse_scenes(sample.text, stopped_by_length=sample.finish_reason == "length")
        for pi, scene in enumerate(parsed):
            status = scene_status(scene, kept, settings)
            if status == KEPT:
                kept.append(scene.scene())
            out.append({"sample": si, "index": pi, "number": scene.number,
                        "situation": scene.situation, "action_a": scene.action_a,
                        "action_b": scene.action_b, "status": status})
    return out
