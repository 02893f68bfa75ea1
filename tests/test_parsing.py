"""Answer and rating parsing: exact expected results for tricky generations, the released
paper rule derived by hand, and a round trip over the real question bank."""

import json

import pytest

from valueprobe_jax.errors import InputError
from valueprobe_jax.probing.parsing import (
    paper_extract,
    parse_answer,
    parse_canonical,
    parse_label_aware,
    parse_paper,
    PAPER_UNPARSED_RATING,
    parse_rating,
    to_canonical_index,
)

UPPER = list("ABCD")
LOWER = list("abcd")
NUM = list("0123")
IMPORTANCE = ["Very important", "Rather important", "Not very important", "Not at all important"]
AGREE5 = ["Agree strongly", "Agree", "Neither agree nor disagree", "Disagree", "Disagree strongly"]
# Q48 of the bank: a 10-point scale whose texts are numbers (and one "9.0", a source quirk).
SCALE10 = ["1 (No choice at all)", "2", "3", "4", "5", "6", "7", "8", "9.0",
           "10 (A great deal of choice)"]
UPPER10 = list("ABCDEFGHIJ")
NUM10 = list("0123456789")

LABEL_AWARE_CASES = [
    # (labels, options, text, expected display index)
    (UPPER, IMPORTANCE, "A", 0),
    (UPPER, IMPORTANCE, " B. Rather important", 1),  # the prefixed style's continuation
    (UPPER, IMPORTANCE, "\n\nC", 2),
    (UPPER, IMPORTANCE, "(D)", 3),
    (UPPER, IMPORTANCE, "D)", 3),
    (UPPER, IMPORTANCE, "Option C", 2),
    (UPPER, IMPORTANCE, "My answer is A", 0),
    (UPPER, IMPORTANCE, "**B**", 1),
    (UPPER, IMPORTANCE, "I would select option C", 2),
    (UPPER, IMPORTANCE, "Certainly! I would select option A.", 0),
    (UPPER, IMPORTANCE, "Not very important", 2),  # must not be read as "Very important"
    (UPPER, IMPORTANCE, "very important", 0),
    (UPPER, IMPORTANCE, "Not at all important.", 3),
    (UPPER, IMPORTANCE, "Very important to me", 0),
    (UPPER, IMPORTANCE, "A or B", None),
    (UPPER, IMPORTANCE, "A. Very important\nB. Rather important\nC. Not very important", None),
    (UPPER, IMPORTANCE, "A very important question, but I cannot answer it.", None),
    (UPPER, IMPORTANCE, "As an AI, I don't have personal beliefs.", None),
    (UPPER, IMPORTANCE, "The answer is (B).", 1),
    (UPPER, IMPORTANCE, "B. Rather important\n\nA strong family is the base of society.", 1),
    (UPPER, IMPORTANCE, "B\n\nExplanation: family matters, but C is also plausible.", None),
    (UPPER, IMPORTANCE, " C: Not very important", 2),
    (UPPER, IMPORTANCE, "Answer:\nD. Not at all important", 3),
    (UPPER, IMPORTANCE, "A. Rather important", 0),  # the label wins over a mismatched text
    (UPPER, IMPORTANCE, "I'd go with B.", 1),
    (UPPER, IMPORTANCE, "B is the best fit for me.", 1),
    (UPPER, IMPORTANCE, "**Answer: C**", 2),
    (UPPER, IMPORTANCE, '"D"', 3),
    (UPPER, IMPORTANCE, "A, because family matters.", 0),
    (UPPER, IMPORTANCE, "  \n A", 0),
    (UPPER, IMPORTANCE, "I choose a different answer", None),
    (UPPER, IMPORTANCE, "", None),
    (UPPER, IMPORTANCE, "Option (B) - Rather important", 1),
    (list("ABCDE"), AGREE5, "E.g., I'd choose B", 1),  # "E.g." is no label E
    (list("ABCDE"), AGREE5, "Agree", 1),
    (list("ABCDE"), AGREE5, "Agree strongly", 0),
    (list("ABCDE"), AGREE5, "Neither agree nor disagree", 2),
    (list("ABCDE"), AGREE5, "I don't agree with that", None),
    (list("ABCDE"), AGREE5, "Disagree strongly", 4),  # longest text, though "Disagree" is first
    (list("ABCDE"), AGREE5, "disagree.", 3),
    # lowercase labels: the article "a" and English words are not labels
    (LOWER, IMPORTANCE, "a) Very important", 0),
    (LOWER, IMPORTANCE, "I think a good answer is b.", 1),
    (LOWER, IMPORTANCE, "a", 0),
    (LOWER, IMPORTANCE, "(c)", 2),
    (LOWER, IMPORTANCE, "I choose a career in medicine", None),
    (LOWER, IMPORTANCE, "I choose a.", 0),
    (LOWER, IMPORTANCE, "option a", 0),
    (LOWER, IMPORTANCE, "B. Rather important", 1),  # "B" is not label b; the text decides
    (LOWER, IMPORTANCE, "a very important matter", None),
    (LOWER, IMPORTANCE, "b, c", None),
    (LOWER, IMPORTANCE, " d. Not at all important", 3),
    (LOWER, IMPORTANCE, "A", None),  # case-sensitive labels, no option text
    # numeric labels: numbers in prose are not labels
    (NUM, IMPORTANCE, "2", 2),
    (NUM, IMPORTANCE, " 1. Rather important", 1),
    (NUM, IMPORTANCE, "Option 0", 0),
    (NUM, IMPORTANCE, "3 out of 4 people would say so", None),
    (NUM, IMPORTANCE, "0.5", None),
    (NUM, IMPORTANCE, "1 or 2", None),
    (NUM, IMPORTANCE, "My answer is 3, because family is everything.", 3),
    (NUM, IMPORTANCE, "I would rate it 3/10", None),
    (NUM, IMPORTANCE, "2) Not very important", 2),
    (NUM, IMPORTANCE, "In 2 of 3 cases it is very important", None),
    # ten options A-J: "I" is both the pronoun and label I
    (UPPER10, SCALE10, "I", 8),
    (UPPER10, SCALE10, "I think J.", 9),
    (UPPER10, SCALE10, "I would select option H", 7),
    (UPPER10, SCALE10, "I. 9.0", 8),
    (UPPER10, SCALE10, "I, for one, pick H", 7),
    (UPPER10, SCALE10, "(I)", 8),
    (UPPER10, SCALE10, "J. 10 (A great deal of choice)", 9),
    (UPPER10, SCALE10, "10 (A great deal of choice)", 9),  # not "1 (No choice at all)"
    (UPPER10, SCALE10, "2", 1),  # no label: the option text "2" decides
    (NUM10, SCALE10, "2", 2),  # here "2" is the label of the option "3"
    (NUM10, SCALE10, "9", 9),
    (NUM10, SCALE10, "10", None),  # not a displayed label, and no option text is "10"
    (NUM10, SCALE10, "1. 2", 1),
]


@pytest.mark.parametrize("labels,options,text,expected", LABEL_AWARE_CASES)
def test_label_aware(labels, options, text, expected):
    assert parse_label_aware(text, labels, options) == expected
    assert parse_answer(text, labels, options) == expected


def test_label_aware_case_count():
    assert len(LABEL_AWARE_CASES) >= 40


def test_label_aware_without_option_texts():
    assert parse_label_aware("B. Rather important", UPPER) == 1
    assert parse_label_aware("Rather important", UPPER) is None


def test_reversed_labels_keep_display_index():
    # reverse variant: text order kept, labels D..A, so "Very important" is displayed as D
    labels = list("DCBA")
    assert parse_label_aware("D. Very important", labels, IMPORTANCE) == 0
    assert parse_label_aware("A", labels, IMPORTANCE) == 3
    assert parse_paper("D. Very important", labels) == 0


def test_shuffled_variant_maps_to_canonical():
    # the release's shuffle: labels travel with their texts
    labels = ["C", "B", "D", "A"]
    options = ["Not very important", "Rather important", "Not at all important", "Very important"]
    order = [2, 1, 3, 0]
    assert parse_canonical("D. Not at all important", labels, options, order) == 3
    assert parse_canonical("A", labels, options, order) == 0
    assert parse_canonical("Rather important", labels, options, order) == 1
    assert parse_canonical("gibberish", labels, options, order) is None
    assert parse_canonical(" C.", labels, options, order, mode="paper") == 2
    # shuffled texts under fixed labels A-D
    assert parse_canonical("A", UPPER, options, order) == 2
    assert to_canonical_index(None, order) is None
    assert to_canonical_index(3, order) == 0


def test_bad_arguments():
    with pytest.raises(InputError, match=r"^parse mode 'fuzzy': unknown \(choose from label_aware, paper\)$"):
        parse_answer("A", UPPER, IMPORTANCE, mode="fuzzy")
    with pytest.raises(ValueError, match="labels"):
        parse_label_aware("A", ["A", "A"], IMPORTANCE[:2])
    with pytest.raises(ValueError, match="options"):
        parse_label_aware("A", UPPER, IMPORTANCE[:3])


# The released rule (src/parse_generation.py at 339b4db): strip; findall
# [A-Z0-9][,.:\n]|\([A-Z0-9]\) (findall [A-Z] when shorter than 5 characters); the set of whole
# matches must have one element, whose first character is the answer; else the text is returned.
PAPER_CASES = [
    # (labels, text, extract result, display index) -- each derived by hand
    (UPPER, "A", "A", 0),  # short: [A-Z] -> {"A"}
    (UPPER, " B. Rather important", "B", 1),  # {"B."}
    (UPPER, "(C)", "C", 2),  # short: [A-Z] -> {"C"}
    (UPPER, "(C) Not very important", "(", None),  # {"(C)"} -> first char "("
    (UPPER, "A. Very important. A, definitely", "A. Very important. A, definitely", None),
    (UPPER, "I would select option B", "I would select option B", None),  # no [,.:\n] after B
    (UPPER, "The answer is C.", "C", 2),
    (UPPER, "A. B.", "A. B.", None),  # 5 characters: long pattern, {"A.", "B."}
    (UPPER, "A, B", "A, B", None),  # 4 characters: [A-Z] -> {"A", "B"}
    (UPPER, "OK: D", "K", None),  # "K:" is the only match
    (UPPER, "Answer: B\nB. Rather", "Answer: B\nB. Rather", None),  # {"B\n", "B."}
    (UPPER, "  D  ", "D", 3),
    (UPPER, "Certainly! B", "Certainly! B", None),
    (UPPER, "", "", None),
    (UPPER, "b", "b", None),  # [A-Z] finds nothing; "b" is no uppercase label
    (list("ABCDE"), "E.g. A", "E", 4),  # the abbreviation is the answer under this rule
    (LOWER, "b", "b", 1),  # no match; the text itself equals a label
    (LOWER, "b. Rather important", "b. Rather important", None),
    (NUM, "1", "1", 1),  # short, no [A-Z]: the text "1" equals a label
    (NUM, "1.", "1.", None),
    (NUM, "2. Not very important", "2", 2),
    (NUM, "3.5", "3.5", None),
    (NUM, "Q1: A", "1", 1),
    (NUM10, "10", "10", None),
    (NUM10, "1. 2", "1. 2", None),  # 4 characters, no [A-Z]
    (UPPER10, "I. 9.0", "I. 9.0", None),  # {"I.", "9."}
]


@pytest.mark.parametrize("labels,text,extracted,expected", PAPER_CASES)
def test_paper_rule(labels, text, extracted, expected):
    assert paper_extract(text) == extracted
    assert parse_paper(text, labels) == expected
    assert parse_answer(text, labels, None, mode="paper") == expected


def test_round_trip_over_question_bank(data_dir):
    """Every option of every question, as "L. text", " L. text", "(L) text", "L" and (letter
    labels) the text alone, parses to its own index for upper, lower, numeric and reversed
    labels."""
    questions = json.loads((data_dir / "wvs7_questions.json").read_text())
    assert len(questions) == 206
    wrong, checked = [], 0
    for q in questions:
        options = q["options"]
        k = len(options)
        for labels in (UPPER10[:k], list("abcdefghij")[:k], NUM10[:k], UPPER10[:k][::-1]):
            for i, text in enumerate(options):
                lab = labels[i]
                forms = [f"{lab}. {text}", f" {lab}. {text}", f"({lab}) {text}", lab]
                if labels[0] in ("A", UPPER10[k - 1]):
                    forms.append(text)
                for form in forms:
                    checked += 1
                    if parse_label_aware(form, labels, options) != i:
                        wrong.append((q["id"], form))
    assert checked > 4000
    assert wrong == []


RATING_CASES = [
    ("7", 7), ("7/10", 7), ("Rating: 8", 8), ("10", 10), ("0", None), ("11", None),
    ("7 or 8", None), ("I would rate this action a 6 on a scale of 1 to 10.", 6),
    ("8 out of 10", 8), ("10/10", 10), ("7.5", None), ("**9**", 9), ("", None),
    ("Rating: 8\n\nThe action shows 2 values", None), ("-3", None), ("seven", None),
    ("I'd give it a 9.", 9), ("5 / 10", 5), ("Score (1-10): 4", 4), ("8, because it helps", 8),
    ("\n 3", 3), ("1", 1), ("100", None), ("8/10. 8 is fair.", 8),
]


@pytest.mark.parametrize("text,expected", RATING_CASES)
def test_parse_rating(text, expected):
    assert parse_rating(text) == expected


def test_parse_rating_paper_rule():
    # the release: first run of digits, no range check, -1 when none (averaged in later)
    for text, want in [("I'd say 7", 7), ("15", 15), ("0", 0), ("none", -1), ("7 or 8", 7),
                       ("", -1), ("Rating: -3", 3), ("I rate it 8/10", 8)]:
        assert parse_rating(text, mode="paper") == want, text
    assert parse_rating("Rating: 8/10", mode="paper") == 8
    assert parse_rating("11", mode="paper") == 11
    assert parse_rating("0", mode="paper") == 0
    assert parse_rating("7 or 8", mode="paper") == 7
    assert parse_rating("7.5", mode="paper") == 7
    assert parse_rating("no idea", mode="paper") == PAPER_UNPARSED_RATING == -1
    with pytest.raises(ValueError, match="mode"):
        parse_rating("7", mode="loose")


def test_paper_ratings_average_the_unparsed_in():
    """The release averages -1 for a reply without digits into the (qid, action) mean."""
    from analysis.metrics import mean_ratings

    texts = ["I'd say 7", "none", "15"]
    rows = [("Q1", "A", parse_rating(t, mode="paper")) for t in texts]
    assert mean_ratings(rows) == {("Q1", "A"): pytest.approx((7 - 1 + 15) / 3)}
