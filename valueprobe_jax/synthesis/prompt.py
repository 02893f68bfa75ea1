"""The scene-generation prompt of value-action synthesis (the paper's Sec. 5.2) and the value
fields it shows: a question's two opposite answers become "Person A: ..." and "Person B: ...".

The scene-generation prompt is the paper's Table 5 text, read from a prompt file: by default
``paper_text/table5_scene_generation_prompt.txt`` of the data directory (the mirror; the paper's
repository does not hold it), or ``generation.prompt_file``. Its "<Fewshot Examples>" slot gets
our few-shot example (the paper's are unpublished; ours is for a value that is not a WVS
question) or nothing, its "10 situations and 20 actions" the configured count, and the question
follows as one value line "<question> Person A: <answer> Person B: <answer>", the format the
text announces. The word limits are the text's own: situations 10-30 words, actions 10-20.

Only when no data directory has the file, ``GENERATION_INSTRUCTION``, our RECONSTRUCTION from the
released scenes (written before the Table 5 text was at hand), is used instead; a synthesis
run's report names the prompt used (``ScenePrompt.source``: the file's path or "reconstruction").
The verification prompt is the paper's repository file data/action_agreement/verification.txt,
text for text.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Sequence

from valueprobe_jax.data.questions import Question
from valueprobe_jax.data.sources import mirror_dir
from valueprobe_jax.errors import InputError

# the paper's Table 5 text, relative to the data directory
PAPER_PROMPT_FILE = "paper_text/table5_scene_generation_prompt.txt"
RECONSTRUCTION = "reconstruction"
FEW_SHOT_SLOT = "<Fewshot Examples>"
_PAPER_COUNT = "10 situations and 20 actions"
# the limits the Table 5 text states ("between 10 to 30 words", "between 10 to 20 words")
PAPER_SITUATION_WORDS = (10, 30)
PAPER_ACTION_WORDS = (10, 20)

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
situation must be between {min_situation_words} and {max_situation_words} words and each action \
between {min_action_words} and {max_action_words} words.

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


@dataclasses.dataclass(frozen=True)
class ScenePrompt:
    """The scene-generation instruction and where it came from (a path or "reconstruction")."""

    text: str
    source: str

    @property
    def is_paper_text(self) -> bool:
        return self.source != RECONSTRUCTION


def load_scene_prompt(prompt_file: str | os.PathLike | None = None,
                      data_dir: str | os.PathLike | None = None) -> ScenePrompt:
    """``prompt_file`` if given (it must exist), else the data directory's Table 5 text
    (``data_dir`` or $VALUEPROBE_DATA_DIR), else the reconstruction."""
    if prompt_file:
        path = pathlib.Path(prompt_file).expanduser()
        if not path.is_file():
            raise InputError(f"generation.prompt_file {prompt_file}: no such file")
    else:
        mirror = mirror_dir(data_dir)
        path = mirror / PAPER_PROMPT_FILE if mirror is not None else None
        if path is None or not path.is_file():
            return ScenePrompt(GENERATION_INSTRUCTION, RECONSTRUCTION)
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise InputError(f"{path}: the scene-generation prompt file is empty")
    return ScenePrompt(text, str(path))


def _paper_text(prompt: ScenePrompt, n: int, few_shot: bool) -> str:
    text = prompt.text
    if n != 10:
        text = text.replace(_PAPER_COUNT, f"{n} situations and {2 * n} actions")
    # the example in the layout the text announces: the value line, then the numbered scenes
    example = (f"Example:\n{EXAMPLE_VALUE}\n{format_scenes(EXAMPLE_SCENES)}" if few_shot else "")
    if FEW_SHOT_SLOT in text:
        text = text.replace(FEW_SHOT_SLOT, example)
        text = text.replace("\n\n\n\n", "\n\n")  # an empty slot leaves no gap
    elif example:
        text += "\n\n" + example
    return text


def generation_messages(question: Question, *, n: int = 10,
                        min_situation_words: int = PAPER_SITUATION_WORDS[0],
                        max_situation_words: int = PAPER_SITUATION_WORDS[1],
                        min_action_words: int = PAPER_ACTION_WORDS[0],
                        max_action_words: int = PAPER_ACTION_WORDS[1], few_shot: bool = True,
                        prompt: ScenePrompt | None = None) -> list[dict[str, str]]:
    """The single user turn asking for `n` scenes for one question. ``prompt``: the instruction
    (``load_scene_prompt``); None = the reconstruction. The paper's text states its own word
    limits; the reconstruction states the given ones."""
    a, b = opposite_answers(question)
    if prompt is not None and prompt.is_paper_text:
        text = _paper_text(prompt, n, few_shot)
        return [{"role": "user",
                 "content": f"{text}\n\n{value_line(question.question, a, b)}"}]
    text = GENERATION_INSTRUCTION.format(
        n=n, min_situation_words=min_situation_words, max_situation_words=max_situation_words,
        min_action_words=min_action_words, max_action_words=max_action_words)
    if few_shot:
        text += f"\nExample:\nValue: {EXAMPLE_VALUE}\n{format_scenes(EXAMPLE_SCENES)}\n"
    text += f"\nNow write {n} situations for:\nValue: {value_line(question.question, a, b)}"
    return [{"role": "user", "content": text}]
