"""The scene-generation prompt of value-action synthesis (the paper's Sec. 5.2) and the value
fields it shows: a question's two opposite answers become "Person A: ..." and "Person B: ...".

The scene-generation prompt is a RECONSTRUCTION. The paper's Table 5 text could not be retrieved
here (only the verification prompt is in the paper's repository, data/action_agreement/
verification.txt, which is used text for text). `GENERATION_INSTRUCTION` is written to match
what the released scenes show: a value line "<question> Person A: <answer> Person B: <answer>"
(the verification prompt's own wording), 10 situations per question, the person called PersonX,
the "Situation_i: / ActionA_i: / ActionB_i:" layout, and word limits (situation <= 25 words,
action <= 20 words: 99.7% of the 2750 released rows fit both; a 20-word situation limit would
reject 4%). The few-shot example is our own text for a value that is not a WVS question.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from valueprobe_jax.data.questions import Question
from valueprobe_jax.errors import InputError

GENERATION_INSTRUCTION = """\
Your task is to write stories of everyday situations in which two people act differently \
because they hold different value orientations.

You will be given a value orientation question and the answers of two people, Person A and \
Person B, in the following format:
{{a value orientation question}} Person A: {{answerA}} Person B: {{answerB}}

Write {n} different situations. Call the person in each situation PersonX. For each situation, \
write the action PersonX takes if PersonX gives Person A's answer (ActionA) and the action PersonX \
takes if PersonX gives Person B's answer (ActionB). The situation must be realistic and must not \
mention the question; the two actions must be reasonable and clearly imply the two answers. Each \
situation must be at most {max_situation_words} words and each action at most \
{max_action_words} words.

Use the following format and do not write anything else:
Situation_1: {{situation}}
ActionA_1: {{action of PersonX with Person A's answer}}
ActionB_1: {{action of PersonX with Person B's answer}}
...
Situation_{n}: {{situation}}
ActionA_{n}: {{action of PersonX with Person A's answer}}
ActionB_{n}: {{action of PersonX with Person B's answer}}
"""


@dataclasses.dataclass(frozen=True)
class Scene:
    """One situation with the actions of Person A and Person B."""

    situation: str
    action_a: str
    action_b: str


# Our own few-shot example (a value outside the WVS bank, so no question can copy it).
EXAMPLE_VALUE = ("How important is punctuality in your life? Person A: Very important "
                 "Person B: Not at all important")
EXAMPLE_SCENES: tuple[Scene, ...] = (
    Scene("PersonX is meeting a friend for lunch, and the bus that would arrive on time is "
          "completely full.",
          "PersonX takes a taxi so they arrive exactly at the agreed time.",
          "PersonX waits for the next bus and texts the friend that they will be late."),
    Scene("PersonX's team meeting starts at nine, and PersonX is still finishing breakfast at a "
          "cafe.",
          "PersonX leaves the cafe early to be seated before the meeting begins.",
          "PersonX finishes breakfast calmly and joins the meeting a few minutes late."),
)


def opposite_answers(question: Question) -> tuple[str, str]:
    """The answers of Person A and Person B: the question's first and last option (the two ends
    of the scale, as in every released Value that matches a bank question)."""
    if len(question.options) < 2:
        raise InputError(f"question {question.id}: needs at least two options")
    return question.options[0], question.options[-1]


def value_field(question: Question) -> str:
    """The released file's Value: "<question>\\nPerson A: <first>\\nPerson B: <last>\\n"."""
    a, b = opposite_answers(question)
    return f"{question.question}\nPerson A: {a}\nPerson B: {b}\n"


def value_line(question_text: str, answer_a: str, answer_b: str) -> str:
    """The one-line form the prompts show: "<question> Person A: <a> Person B: <b>"."""
    return f"{question_text} Person A: {answer_a} Person B: {answer_b}"


def format_scenes(scenes: Sequence[Scene]) -> str:
    """Scenes in the prompt's numbered layout."""
    return "\n".join(f"Situation_{i}: {s.situation}\nActionA_{i}: {s.action_a}\n"
                     f"ActionB_{i}: {s.action_b}" for i, s in enumerate(scenes, 1))


def generation_messages(question: Question, *, n: int = 10, max_situation_words: int = 25,
                        max_action_words: int = 20, few_shot: bool = True
                        ) -> list[dict[str, str]]:
    """The single user turn asking for `n` scenes for one question."""
    a, b = opposite_answers(question)
    text = GENERATION_INSTRUCTION.format(n=n, max_situation_words=max_situation_words,
                                         max_action_words=max_action_words)
    if few_shot:
        text += f"\nExample:\nValue: {EXAMPLE_VALUE}\n{format_scenes(EXAMPLE_SCENES)}\n"
    text += f"\nNow write {n} situations for:\nValue: {value_line(question.question, a, b)}"
    return [{"role": "user", "content": text}]
