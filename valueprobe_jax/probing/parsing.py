"""Answer parsing for the text method: which displayed option does a generated answer pick?

Two modes:

- ``label_aware`` (default): knows the variant's own displayed labels (A-J, a-j, 0-9, or any
  short strings) and option texts. A label counts only in a context that marks it as an answer
  (bare label, "A.", "(A)", "A)", "Option A", "My answer is A", "**A**", "A. Very important", a
  line that starts "B.", ...), so the article "a", the pronoun "I" and numbers in prose are not
  read as labels. Two different labels -> None. With no label, the option text itself decides
  ("Not very important" is matched before "Very important"). Labels are case-sensitive: in the
  lowercase variant "B" is not label "b" (the option text may still decide).
- ``paper``: the released code's rule (shensq/Revisiting-LLM-Value-Probing-Strategies,
  src/parse_generation.py, extract_answer_pattern, commit 339b4db), reproduced exactly for
  fidelity comparisons; see `paper_extract`.

All parsers return the index in *display* order (or None); `to_canonical_index` maps it to the
option's canonical index with the variant's display_order.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from valueprobe_jax.vocabulary import PARSE_MODES, RATINGS, ParseMode, check_choice

__all__ = [
    "parse_answer",
    "parse_label_aware",
    "paper_extract",
    "parse_paper",
    "to_canonical_index",
    "parse_canonical",
    "parse_rating",
    "PAPER_UNPARSED_RATING",
]

# --- shared text normalisation ---------------------------------------------------------------

_MARKDOWN = re.compile(r"\*+|`+|(?<!\w)_{1,2}|_{1,2}(?!\w)")
_SPACES = re.compile(r"[ \t\r\f\v]+")


def _normalise(text: str) -> str:
    """Drop markdown emphasis/code marks, unify quotes and dashes, collapse spaces, strip."""
    text = _MARKDOWN.sub("", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    text = text.replace("\u2013", "-").replace("\u2014", "-")
    return _SPACES.sub(" ", text).strip()


def _fold(text: str) -> str:
    """Case- and whitespace-insensitive form of an option text."""
    return " ".join(_normalise(text).split()).casefold()


# --- label-aware mode ------------------------------------------------------------------------

# Words that put the next token in answer position. The noun cues make even an ambiguous label
# ("option a") a label; after the verb cues an ambiguous label needs a clean ending ("I choose
# a." but not "I choose a career").
_NOUN_CUE = re.compile(
    r"(?:\b(?:option|choice|letter|label)\s*(?:is\s*|was\s*|would\s+be\s*|:\s*|-\s*|#\s*)?"
    r"|\banswer\s*(?:is\s*|was\s*|would\s+be\s*|will\s+be\s*|:\s*|-\s*|=\s*)"
    r"|\banswer\s+)[\"'(\[]?$",
    re.IGNORECASE,
)
_VERB_CUE = re.compile(
    r"\b(?:select|selected|selecting|choose|chose|choosing|pick|picked|go\s+with|going\s+with"
    r"|opt\s+for|answer\s+with|respond\s+with|is|be)\s+[\"'(\[]?$",
    re.IGNORECASE,
)
# A bullet or quote before a label at the start of a line.
_LINE_LEAD = re.compile(r"(?:^|\n)[ \t]*(?:[-+>#]+[ \t]*)?[\"'(\[]?$")
_TEXT_LEAD = re.compile(r"^[\"'(\[]?$")
_JOINERS = re.compile(r"[ \t]*(?:[.:)\]\-,]|[ \t])[ \t]*")


def _is_ambiguous(label: str) -> bool:
    """Labels that are also ordinary words or numbers: the article a/A, the pronoun I/i, digits."""
    return label in ("a", "A", "i", "I") or label.isdigit() or label.islower()


def _clean_end(rest: str, label: str) -> bool:
    """Whether what follows a label ends it as an answer: end, newline, ')', ']', a '.'/':' not
    inside an abbreviation or decimal, a quote; ',', ';', '!', '?' too, except after the
    pronoun I/i."""
    if not rest or rest[0] == "\n":
        return True
    c = rest[0]
    nxt = rest[1] if len(rest) > 1 else ""
    if c in ")]\"":
        return True
    if c == "'":
        return not nxt.isalnum()
    if c in ".:":
        return not nxt.isalnum()
    if c in ",;!?":
        return label not in ("I", "i")
    return False


def _own_text_follows(rest: str, option: str, ambiguous: bool) -> bool:
    """Whether the label is followed (after '.', ':', ')', '-', ',' or a space) by its own option
    text. After a bare space an ambiguous label needs the text's exact case ("A Very important"),
    so that the article in "A very important question" is not read as label A."""
    if not option:
        return False
    m = _JOINERS.match(rest)
    if not m or m.end() == 0:
        return False
    space_only = not rest[:m.end()].strip()
    tail = " ".join(rest[m.end():].split())
    if ambiguous and space_only:
        matched = tail.startswith(option)
    else:
        matched = tail.casefold().startswith(option.casefold())
    return matched and not tail[len(option):len(option) + 1].isalnum()


def _label_occurrences(text: str, label: str):
    """Start/end of every occurrence of `label` standing as its own token (no letter or digit
    touching it, not part of an abbreviation "e.g.", a decimal "1.5", a word "B's" or "X-ray")."""
    for m in re.finditer(re.escape(label), text):
        s, e = m.start(), m.end()
        before = text[s - 1] if s > 0 else ""
        before2 = text[s - 2] if s > 1 else ""
        after = text[e] if e < len(text) else ""
        after2 = text[e + 1] if e + 1 < len(text) else ""
        if before.isalnum() or after.isalnum():
            continue
        if before in ".'" and before2.isalnum():  # "U.S.A", "e.g", "1.5", "'s"
            continue
        if before == "-" and before2.isalnum():  # "Covid-19"
            continue
        if after in ".'-" and after2.isalnum():  # "E.g.", "B's", "A-level", "1.5"
            continue
        # "7/10", "50%", "$5"
        if label.isdigit() and ((after and after in "/%") or (before and before in "$#/")):
            continue
        yield s, e


_COORD_AFTER = re.compile(r"[ \t]*(?:/|&|,|\bor\b|\band\b)[ \t]*[\"'(\[]?([^\s,.;:)\]\"'/&]+)")
_COORD_BEFORE = re.compile(
    r"([^\s,.;:(\[\"'/&]+)[)\]\"']?[ \t]*(?:/|&|,|\bor\b|\band\b)[ \t]*[\"'(\[]?$")


_OPTION_NOUN = re.compile(r"\b(?:option|choice|letter|label)\s*[\"'(\[]?$", re.IGNORECASE)
_WINDOW = 48  # cues and coordinations sit within this many characters before a label


def _is_answer_mention(text: str, s: int, e: int, label: str, option: str,
                       labels: frozenset) -> bool:
    """Whether the label token at text[s:e] is used as an answer (see module docstring).
    Patterns ending in `$` are searched in text[s - _WINDOW:s] via pos/endpos (where `^` still
    means the real start of the text), which keeps long generations cheap."""
    lo = max(0, s - _WINDOW)
    rest = text[e:e + len(option) + _WINDOW]
    ambiguous = _is_ambiguous(label)
    clean = _clean_end(rest, label)
    before = text[s - 1] if s else ""
    if before in ("(", "[") and rest.startswith((")", "]")):
        return True  # "(B)", "[B]"
    if _own_text_follows(rest, option, ambiguous):
        return True  # "B. Rather important", "a) Very important"
    m_after, m_before = _COORD_AFTER.match(rest), _COORD_BEFORE.search(text, lo, s)
    if (m_after and m_after.group(1) in labels) or (m_before and m_before.group(1) in labels):
        return True  # "A or B", "a/b": both count, so the answer is ambiguous
    if _TEXT_LEAD.match(text, 0, s):  # start of the answer
        if clean:
            return True
        return not ambiguous and (not rest or rest[0] in " \t-")  # "B is my answer"
    if _NOUN_CUE.search(text, lo, s):
        # "option a" is a label, "the answer a ..." is not: only option-like nouns bind.
        return clean or not ambiguous or bool(_OPTION_NOUN.search(text, lo, s))
    if _VERB_CUE.search(text, lo, s):
        return clean or (not ambiguous and label.isupper())
    if _LINE_LEAD.search(text, lo, s):
        return clean  # "Answer:\nB." / "- B)"
    # A capital letter other than A and I standing alone is a label anywhere ("... so B").
    return not ambiguous and label.isupper() and len(label) == 1


_ANSWER_LEAD = re.compile(
    r"^(?:(?:my|the)\s+)?(?:final\s+)?answer\s*(?:is|would\s+be|:|-)?\s*"
    r"|^i\s+(?:would\s+|will\s+)?(?:select|choose|pick|go\s+with)\s+(?:option\s+)?")
_FOREIGN_LABEL = re.compile(r"^[(\[]?[0-9a-z][.:)\]]\s*")


def _option_text_match(text: str, options: Sequence[str]) -> Optional[int]:
    """Index of the option whose text the answer begins with (case-insensitive; the longest
    matching text wins, so "Not very important" beats "Very important"). An answer lead-in
    ("Answer:", "I choose") and one leading non-label token with a delimiter ("B." in the
    lowercase variant) are skipped."""
    folded = " ".join(text.split()).casefold().lstrip("\"'[ ")
    folded = _ANSWER_LEAD.sub("", folded)
    candidates = [folded]
    m = _FOREIGN_LABEL.match(folded)
    if m:
        candidates.append(folded[m.end():])
    folds = [_fold(o) for o in options]
    for cand in candidates:
        best, best_len = None, 0
        for i, o in enumerate(folds):
            if not o or len(o) <= best_len or not cand.startswith(o):
                continue
            if not cand[len(o):len(o) + 1].isalnum():
                best, best_len = i, len(o)
        if best is not None:
            return best
    return None


def parse_label_aware(text: str, labels: Sequence[str],
                      options: Optional[Sequence[str]] = None) -> Optional[int]:
    """Display index of the option a generated answer picks, or None (no answer, or two
    different labels). `labels` and `options` are the displayed labels and option texts (without
    the label prefix), both in display order."""
    labels = [str(x) for x in labels]
    if len(set(labels)) != len(labels) or not all(labels):
        raise ValueError(f"labels: empty or duplicate labels in {labels!r}")
    if options is not None and len(options) != len(labels):
        raise ValueError(f"options: {len(options)} texts for {len(labels)} labels")
    norm = _normalise(text)
    texts = [" ".join(_normalise(o).split()) for o in options] if options is not None else None
    label_set = frozenset(labels)
    found = set()
    for i, label in enumerate(labels):
        option = texts[i] if texts is not None else ""
        for s, e in _label_occurrences(norm, label):
            if _is_answer_mention(norm, s, e, label, option, label_set):
                found.add(i)
                break
    if len(found) == 1:
        return found.pop()
    if found or texts is None:
        return None
    return _option_text_match(norm, texts)


# --- paper mode ------------------------------------------------------------------------------

_PAPER_PATTERN = re.compile(r"[A-Z0-9][,.:\n]|\([A-Z0-9]\)")
_PAPER_SHORT = re.compile(r"[A-Z]")


def paper_extract(text: str) -> str:
    """The released extract_answer_pattern, exactly: strip; findall of
    `[A-Z0-9][,.:\\n]|\\([A-Z0-9]\\)` (of `[A-Z]` when the stripped text is shorter than 5
    characters); the set of *whole matched strings* must have one element, whose first character
    is returned; otherwise the stripped text itself is returned.

    Consequences kept on purpose: "A." and "A," are two distinct matches (invalid); a lone "(B)"
    match in a text of 5+ characters returns "(" (never a label); lowercase labels are found
    only when the whole stripped text is the label (the fallback returns the text); numeric
    labels likewise count bare ("1") but not as "1." when the text is that short."""
    text = text.strip()
    matches = _PAPER_PATTERN.findall(text)
    if len(text) < 5:
        matches = _PAPER_SHORT.findall(text)
    distinct = set(matches)
    if len(distinct) == 1:
        return next(iter(distinct))[0]
    return text


def parse_paper(text: str, labels: Sequence[str]) -> Optional[int]:
    """Display index under the released rule: `paper_extract` must equal one displayed label
    (the release counts it with Counter against option.split(".")[0]); else None."""
    got = paper_extract(text)
    labels = [str(x) for x in labels]
    return labels.index(got) if got in labels else None


# --- entry points ----------------------------------------------------------------------------

def parse_answer(text: str, labels: Sequence[str], options: Optional[Sequence[str]] = None,
                 *, mode: ParseMode = "label_aware") -> Optional[int]:
    """Display index of the chosen option under `mode` ("label_aware" or "paper"), or None."""
    check_choice("parse mode", mode, PARSE_MODES)
    if mode == "paper":
        return parse_paper(text, labels)
    return parse_label_aware(text, labels, options)


def to_canonical_index(display_index: Optional[int],
                       display_order: Sequence[int]) -> Optional[int]:
    """Canonical index of the displayed option `display_index` (None stays None).
    display_order[i] is the canonical index of the i-th displayed option."""
    if display_index is None:
        return None
    return int(display_order[display_index])


def parse_canonical(text: str, labels: Sequence[str], options: Optional[Sequence[str]],
                    display_order: Sequence[int], *, mode: ParseMode = "label_aware") -> Optional[int]:
    """`parse_answer` followed by `to_canonical_index`."""
    return to_canonical_index(parse_answer(text, labels, options, mode=mode), display_order)


# --- action ratings (1-10) -------------------------------------------------------------------

_SCALE_MENTION = re.compile(
    r"\b(?:on\s+)?(?:a\s+)?(?:scale\s+)?(?:of\s+|from\s+)?\b1\s*(?:-|to)\s*10\b", re.IGNORECASE)
_OUT_OF_TEN = re.compile(r"(\d+)\s*(?:/|out\s+of)\s*10\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)?(?![\w])")


# what the release stores (and averages in) for a rating reply without digits
PAPER_UNPARSED_RATING = -1


def parse_rating(text: str, *, mode: str = "strict") -> Optional[int]:
    """Rating 1..10 from a generated answer to an action-rating prompt, or None.

    strict: the numbers in the text, after dropping scale mentions ("1 to 10", "1-10") and
    denominators ("7/10", "8 out of 10" count as 7 and 8), must be one distinct integer in 1..10;
    decimals, negatives, 0, >10 and two different numbers give None.
    paper: the released rule (src/eval_utils.py, load_action_scores): the first run of digits
    (`re.findall(r"\\d+")[0]`) as an int, with no range check ("0", "15" kept), and -1
    (``PAPER_UNPARSED_RATING``) when there is none, as the release stores it; the release then
    averages the -1 in (``analysis.metrics.mean_ratings`` does too: it drops only None/NaN)."""
    if mode == "paper":
        found = re.findall(r"\d+", text)
        return int(found[0]) if found else PAPER_UNPARSED_RATING
    if mode != "strict":
        raise ValueError(f"mode: unknown rating mode {mode!r} (expected strict or paper)")
    norm = _normalise(text)
    norm = _SCALE_MENTION.sub(" ", norm)
    norm = _OUT_OF_TEN.sub(lambda m: f" {m.group(1)} ", norm)
    values = set()
    for tok in _NUMBER.findall(norm):
        if not tok.lstrip("-").isdigit():
            return None  # decimal or "7,5": not an integer rating
        values.add(int(tok))
    if len(values) != 1:
        return None
    value = values.pop()
    return value if value in RATINGS else None
