"""Value-action dataset synthesis (the paper's Sec. 5.2 data): scene generation, cleaning and
self-critic verification, resumable per question.

For each value question the two opposite answers (its first and last option) become
"Person A: ..." and "Person B: ...". A generator model writes numbered situations in which PersonX
acts as A or as B would ("Situation_i: / ActionA_i: / ActionB_i:"); the reply is parsed
tolerantly, each scene is checked (complete, not cut off by the token limit, within the word
limits the prompt states, two different actions, not a copy of the prompt's example, not a near
duplicate of a scene already kept) and up to `scenes_per_question` are kept. A judge model then
answers the paper's verification prompt (Q1-Q4, Yes/No, asked for as JSON) for every kept scene,
greedily; its raw reply is stored as the row's Verification, and readers keep rows with four Yes
(`data.scenarios.load_scenarios`). Every scene that is dropped is counted by reason, so the
report's numbers add up: scenes parsed = kept + sum(dropped).

The scene-generation prompt is a RECONSTRUCTION. The paper's Table 5 text could not be retrieved
here (only the verification prompt is in the paper's repository, data/action_agreement/
verification.txt, which is used text for text). `GENERATION_INSTRUCTION` is written to match
what the released scenes show: a value line "<question> Person A: <answer> Person B: <answer>"
(the verification prompt's own wording), 10 situations per question, the person called PersonX,
the "Situation_i: / ActionA_i: / ActionB_i:" layout, and word limits (situation <= 25 words,
action <= 20 words: 99.7% of the 2750 released rows fit both; a 20-word situation limit would
reject 4%). The few-shot example is our own text for a value that is not a WVS question.

Near duplicates: two situations of one question are duplicates when the Jaccard similarity of
their content-word sets (lower-cased ASCII words, minus a small stop-word list and "PersonX") is
>= `dedup_threshold` (default 0.6). Among the released scenes of each question the largest such
similarity is 0.42, so the default never merges two of the paper's distinct scenes, while a
reworded copy ("PersonX's friend asks for a loan" / "A friend asks PersonX for a loan") is caught.

Workdir layout (each file written atomically; a rerun skips questions whose chunk exists):
  manifest.json              the config fingerprints the chunks were made with
  generate/<qid>.json        raw samples, every parsed scene with its status, per question
  verify/<qid>.json          the judge's reply for every kept scene of the question
  scenes.jsonl               kept scenes (Value, Situation, ActionA, ActionB, Section)
  scenarios.jsonl            the same rows with Verification: the released file's format
  report.json                counts per stage and per question
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import Any, Callable, Iterable, Sequence

from valueprobe_jax import io
from valueprobe_jax.data import sources
from valueprobe_jax.data.questions import Question
from valueprobe_jax.data.scenarios import VERDICT_KEYS, parse_value, verdict_status
from valueprobe_jax.data.transliterate import to_ascii
from valueprobe_jax.errors import InputError

VERIFICATION_FILE = "action_agreement/verification.txt"

# ------------------------------------------------------------------------------ the prompt

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


# ------------------------------------------------------------------------------ parsing

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


# ------------------------------------------------------------------------------ verification

def verification_instruction(data_dir: str | os.PathLike | None = None, *,
                             download: bool = True) -> str:
    """The paper's verification prompt (data/action_agreement/verification.txt), verbatim."""
    path = sources.source_file(VERIFICATION_FILE, data_dir, download=download)
    return path.read_text(encoding="utf-8").rstrip("\n")


def verification_messages(instruction: str, value: str, situation: str, action_a: str,
                          action_b: str) -> list[dict[str, str]]:
    """The judge's conversation: the paper's instruction as the system turn (merged into the user
    turn for templates without a system role) and the sample in the layout the instruction
    describes ("Value: ...\\nSituation: ...\\nActionA: ...\\nActionB: ...")."""
    parsed = parse_value(value)
    if parsed is None:
        raise InputError(f"Value {value[:60]!r}: lacks the 'Person A:' / 'Person B:' lines")
    line = value_line(*parsed)
    user = f"Value: {line}\nSituation: {situation}\nActionA: {action_a}\nActionB: {action_b}"
    return [{"role": "system", "content": instruction}, {"role": "user", "content": user}]


# ------------------------------------------------------------------------------ chat models

class ChatModel:
    """A loaded model with the rendering its registry entry asks for and one sampler per batch
    width (the sampler's jitted shapes depend on it)."""

    def __init__(self, model: Any):
        if model.tokenizer is None:
            raise InputError(f"model {model.name}: its checkpoint has no tokenizer")
        self.model = model
        spec = model.spec
        has_template = bool(getattr(model.tokenizer, "chat_template", None))
        self.instruct = spec.use_chat_template if spec is not None else has_template
        if self.instruct and not has_template:
            raise InputError(f"model {model.name}: registered as a chat model but its tokenizer "
                             "has no chat template")
        self.system_role = spec.system_role if spec is not None else None
        self._samplers: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return self.model.name

    def render(self, messages: Sequence[dict[str, str]], assistant_prefix: str = "") -> str:
        """Generation-ready text (prompts.render: chat template, or plain joined text)."""
        from valueprobe_jax.probing.prompts import Prompt, render  # noqa: PLC0415

        msgs = [dict(m) for m in messages]
        if assistant_prefix:
            msgs.append({"role": "assistant", "content": assistant_prefix})
        prompt = Prompt(qid="", style="synthesis", variant="", country=None, messages=tuple(msgs),
                        labels=(), display_order=(), option_texts_displayed=(),
                        assistant_prefix=assistant_prefix or None)
        return render(prompt, self.model.tokenizer, instruct=self.instruct,
                      system_role=self.system_role)

    def generate(self, texts: Sequence[str], keys: Sequence[str], params: Any,
                 max_batch: int) -> list[list[Any]]:
        from valueprobe_jax.engine import Sampler  # noqa: PLC0415

        if max_batch not in self._samplers:
            m = self.model
            self._samplers[max_batch] = Sampler(m.cfg, m.params, m.tokenizer, max_batch=max_batch)
        return self._samplers[max_batch].generate(list(texts), list(keys), params)


# ------------------------------------------------------------------------------ files

def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON so the file appears whole or not at all."""
    io.write_text(path, json.dumps(obj, ensure_ascii=False, indent=1) + "\n")


def write_jsonl_atomic(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write JSON Lines (one object per line, the released file's layout) atomically."""
    io.write_jsonl(path, rows)


def chunk_name(qid: str) -> str:
    """A file name for a question id (ids of user files may hold any characters)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", qid)
    if safe != qid:
        safe += "-" + hashlib.sha1(qid.encode()).hexdigest()[:8]
    return safe + ".json"


def read_scene_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file with Value, Situation, ActionA, ActionB (Section and
    Verification optional); raises InputError naming the first bad line."""
    rows = []
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {n} is not JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{path}: line {n} is not a JSON object")
            missing = [k for k in ("Value", "Situation", "ActionA", "ActionB")
                       if not isinstance(rec.get(k), str)]
            if missing:
                raise InputError(f"{path}: line {n} lacks text field(s) {', '.join(missing)}")
            if parse_value(rec["Value"]) is None:
                raise InputError(f"{path}: line {n}: Value lacks 'Person A:' / 'Person B:' lines")
            rows.append(rec)
    return rows


# ------------------------------------------------------------------------------ verification run

@dataclasses.dataclass(frozen=True)
class VerifySettings:
    max_new_tokens: int = 48
    batch: int = 8


def verify_rows(judge: ChatModel, instruction: str, rows: Sequence[dict[str, Any]],
                settings: VerifySettings, *, keys: Sequence[str] | None = None) -> list[str]:
    """The judge's greedy reply to the verification prompt for every row (same order)."""
    from valueprobe_jax.engine.sampling import SamplingParams  # noqa: PLC0415

    if not rows:
        return []
    texts = [judge.render(verification_messages(instruction, r["Value"], r["Situation"],
                                                r["ActionA"], r["ActionB"])) for r in rows]
    keys = list(keys) if keys is not None else [f"verify|{i}" for i in range(len(rows))]
    sp = SamplingParams(temperature=0.0, max_new_tokens=settings.max_new_tokens, num_samples=1)
    gens = judge.generate(texts, keys, sp, max_batch=settings.batch)
    return [g[0].text.strip() for g in gens]


def status_counts(verifications: Iterable[str]) -> dict[str, int]:
    """How many replies are "kept" (four Yes) and how many fail for each reason."""
    return dict(collections.Counter(verdict_status(v, VERDICT_KEYS) for v in verifications))


# ------------------------------------------------------------------------------ the pipeline

GENERATION_FINGERPRINT = ("input", "model", "generation")
VERIFICATION_FINGERPRINT = ("verification",)


def _fingerprint(config: Any, fields: Sequence[str]) -> str:
    from valueprobe_jax.experiments.config_loading import config_fingerprint  # noqa: PLC0415

    return config_fingerprint(config, fields)


def check_manifest(workdir: pathlib.Path, config: Any) -> None:
    """Bind a workdir to the settings its chunks were made with (not max_questions nor the run
    section: chunks are per question and do not depend on batching), so a rerun with other
    settings cannot mix two datasets."""
    want = {"generation": _fingerprint(config, GENERATION_FINGERPRINT),
            "verification": _fingerprint(config, VERIFICATION_FINGERPRINT)}
    path = workdir / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        for stage, fp in want.items():
            if old.get(stage) != fp:
                folder = workdir / ("generate" if stage == "generation" else "verify")
                raise InputError(f"--workdir {workdir}: its {stage} chunks were made with other "
                                 f"{stage} settings ({old.get('config')!r}); use a new --workdir "
                                 f"or delete {folder} and manifest.json")
        return
    write_json_atomic({"config": config.get("config_spec", ""), **want}, path)


def selection_settings(config: Any) -> SelectionSettings:
    g = config.generation
    examples = tuple(s.situation for s in EXAMPLE_SCENES) if g.few_shot else ()
    return SelectionSettings(scenes_per_question=g.scenes_per_question,
                             max_situation_words=g.max_situation_words,
                             max_action_words=g.max_action_words,
                             dedup_threshold=g.dedup_threshold, example_situations=examples)


def generation_chunk(question: Question, prompt_text: str, samples: Sequence[Sample],
                     settings: SelectionSettings) -> dict[str, Any]:
    """The per-question record of the generation stage."""
    scenes = select_scenes(samples, settings)
    counts = collections.Counter(s["status"] for s in scenes)
    return {
        "qid": question.id, "question": question.question, "value": value_field(question),
        "section": question.section, "prompt": prompt_text,
        "samples": [{"text": s.text, "finish_reason": s.finish_reason} for s in samples],
        "scenes": scenes, "parsed": len(scenes), "kept": counts.pop(KEPT, 0),
        "dropped": dict(sorted(counts.items())),
    }


def scene_rows(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    """The kept scenes of a generation chunk as rows of the released format (no Verification)."""
    return [{"Value": chunk["value"], "Situation": s["situation"], "ActionA": s["action_a"],
             "ActionB": s["action_b"], "Section": chunk["section"]}
            for s in chunk["scenes"] if s["status"] == KEPT]


@dataclasses.dataclass
class StageCounts:
    items: int = 0     # questions in the stage
    run: int = 0       # questions computed in this call
    resumed: int = 0   # questions whose chunk existed already


def run_generation(config: Any, workdir: pathlib.Path, questions: Sequence[Question],
                   get_model: Callable[[str, str], ChatModel], *, log: Callable[[str], None] = print
                   ) -> StageCounts:
    """Generate, parse and select scenes for every question without a generate/ chunk."""
    from valueprobe_jax.engine.sampling import SamplingParams  # noqa: PLC0415

    g = config.generation
    settings = selection_settings(config)
    out_dir = workdir / "generate"
    todo = [q for q in questions if not (out_dir / chunk_name(q.id)).exists()]
    counts = StageCounts(len(questions), len(todo), len(questions) - len(todo))
    if not todo:
        return counts
    model = get_model(config.model.name, config.model.dtype)
    sp = SamplingParams(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p,
                        max_new_tokens=g.max_new_tokens, num_samples=g.samples, seed=g.seed)
    prefix = "Situation_1:" if g.prime_format else ""
    batch = max(1, config.run.batch_questions)
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        texts = [model.render(generation_messages(
            q, n=g.scenes_per_question, max_situation_words=g.max_situation_words,
            max_action_words=g.max_action_words, few_shot=g.few_shot), prefix) for q in part]
        # one sampler width for every batch (the last one is padded), so jit compiles once
        gens = model.generate(texts, [f"synthesis|{q.id}" for q in part], sp,
                              max_batch=g.samples * batch)
        for q, text, samples in zip(part, texts, gens):
            chunk = generation_chunk(q, text, [Sample(prefix + s.text, s.finish_reason)
                                               for s in samples], settings)
            write_json_atomic(chunk, out_dir / chunk_name(q.id))
            log(f"generate {q.id}: {len(samples)} samples, {chunk['parsed']} scenes parsed, "
                f"{chunk['kept']} kept")
    return counts


def run_verification(config: Any, workdir: pathlib.Path, questions: Sequence[Question],
                     get_model: Callable[[str, str], ChatModel], *,
                     log: Callable[[str], None] = print) -> StageCounts:
    """Ask the judge about the kept scenes of every question that has no verify/ chunk, or one
    made for other scenes (its generate/ chunk was made again)."""
    v = config.verification
    out_dir = workdir / "verify"
    scenes = {q.id: scene_rows(json.loads((workdir / "generate" / chunk_name(q.id)).read_text()))
              for q in questions}
    todo = [q for q in questions if _verify_chunk(out_dir, q.id, scenes[q.id]) is None]
    counts = StageCounts(len(questions), len(todo), len(questions) - len(todo))
    if not todo:
        return counts
    judge_name = v.model or config.model.name
    settings = VerifySettings(max_new_tokens=v.max_new_tokens,
                              batch=max(1, config.run.batch_verify))
    instruction = verification_instruction(config.input.data_dir or None)
    judge: ChatModel | None = None
    pending: list[tuple[Question, list[dict[str, Any]]]] = []

    def flush() -> None:
        nonlocal judge
        rows = [r for _, rs in pending for r in rs]
        keys = [f"verify|{q.id}|{i}" for q, rs in pending for i in range(len(rs))]
        if rows and judge is None:
            judge = get_model(judge_name, v.dtype or config.model.dtype)
        replies = verify_rows(judge, instruction, rows, settings, keys=keys) if rows else []
        at = 0
        for q, rs in pending:
            mine = replies[at:at + len(rs)]
            at += len(rs)
            write_json_atomic({"qid": q.id, "judge": judge_name, "scenes": rows_digest(rs),
                               "verifications": mine,
                               "status": [verdict_status(x) for x in mine]},
                              out_dir / chunk_name(q.id))
            four_yes = sum(verdict_status(x) == "kept" for x in mine)
            log(f"verify {q.id}: {len(mine)} scenes, {four_yes} with four Yes")
        pending.clear()

    for q in todo:
        pending.append((q, scenes[q.id]))
        if sum(len(rs) for _, rs in pending) >= settings.batch:
            flush()
    flush()
    return counts


def rows_digest(rows: Sequence[dict[str, Any]]) -> str:
    """A short hash of scene rows: ties a verify chunk to the scenes it judged."""
    blob = json.dumps([[r["Value"], r["Situation"], r["ActionA"], r["ActionB"]] for r in rows])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _verify_chunk(out_dir: pathlib.Path, qid: str,
                  rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The verify chunk of a question if it exists and judged exactly `rows`, else None."""
    path = out_dir / chunk_name(qid)
    if not path.exists():
        return None
    chunk = json.loads(path.read_text())
    if chunk.get("scenes") != rows_digest(rows) or len(chunk["verifications"]) != len(rows):
        return None
    return chunk


def assemble(config: Any, workdir: pathlib.Path, questions: Sequence[Question],
             gen_counts: StageCounts, ver_counts: StageCounts | None) -> dict[str, Any]:
    """Write scenes.jsonl, scenarios.jsonl and report.json from the chunks; return the report."""
    per_q: dict[str, Any] = {}
    dropped: collections.Counter = collections.Counter()
    finish: collections.Counter = collections.Counter()
    scenes_out, scenarios_out = [], []
    n_samples = no_scene = parsed = kept = 0
    verdicts: collections.Counter = collections.Counter()
    for q in questions:
        chunk = json.loads((workdir / "generate" / chunk_name(q.id)).read_text())
        rows = scene_rows(chunk)
        scenes_out += rows
        n_samples += len(chunk["samples"])
        finish.update(s["finish_reason"] for s in chunk["samples"])
        no_scene += sum(1 for i in range(len(chunk["samples"]))
                        if not any(s["sample"] == i for s in chunk["scenes"]))
        parsed += chunk["parsed"]
        kept += chunk["kept"]
        dropped.update(chunk["dropped"])
        entry = {"parsed": chunk["parsed"], "kept": chunk["kept"], "dropped": chunk["dropped"]}
        if ver_counts is not None:
            vchunk = _verify_chunk(workdir / "verify", q.id, rows)
            if vchunk is None:
                raise RuntimeError(f"verify chunk of {q.id} is missing or stale")
            st = collections.Counter(vchunk["status"])
            verdicts.update(st)
            entry["verified_kept"] = st.get("kept", 0)
            scenarios_out += [{**r, "Verification": text}
                              for r, text in zip(rows, vchunk["verifications"])]
        per_q[q.id] = entry
    write_jsonl_atomic(scenes_out, workdir / "scenes.jsonl")
    report: dict[str, Any] = {
        "config": config.get("config_spec", ""),
        "generator": config.model.name,
        "generation": {
            "questions": gen_counts.items, "questions_run": gen_counts.run,
            "questions_resumed": gen_counts.resumed, "samples": n_samples,
            "finish_reasons": dict(sorted(finish.items())), "samples_without_scenes": no_scene,
            "scenes_parsed": parsed, "kept": kept, "dropped": dict(sorted(dropped.items())),
            "word_limits": {"situation": config.generation.max_situation_words,
                            "action": config.generation.max_action_words},
            "dedup_threshold": config.generation.dedup_threshold,
        },
        "per_question": per_q,
    }
    if ver_counts is not None:
        write_jsonl_atomic(scenarios_out, workdir / "scenarios.jsonl")
        report["verification"] = {
            "judge": config.verification.model or config.model.name,
            "questions_run": ver_counts.run, "questions_resumed": ver_counts.resumed,
            "rows": len(scenarios_out), "four_yes": verdicts.get("kept", 0),
            "status": dict(sorted(verdicts.items())),
        }
    write_json_atomic(report, workdir / "report.json")
    return report


def report_lines(report: dict[str, Any]) -> list[str]:
    """A short human-readable summary of a synthesis report."""
    g = report["generation"]
    out = [f"generation ({report['generator']}): {g['questions']} questions "
           f"({g['questions_run']} run, {g['questions_resumed']} resumed), {g['samples']} samples "
           f"(finish: {', '.join(f'{k} {v}' for k, v in g['finish_reasons'].items()) or '-'}; "
           f"{g['samples_without_scenes']} without any scene)",
           f"  scenes parsed {g['scenes_parsed']}: kept {g['kept']}, dropped "
           f"{g['scenes_parsed'] - g['kept']}"]
    out += [f"    {reason}: {n}" for reason, n in g["dropped"].items()]
    v = report.get("verification")
    if v is not None:
        out.append(f"verification ({v['judge']}): {v['rows']} scenes, "
                   f"{v['four_yes']} with four Yes")
        out += [f"    {reason}: {n}" for reason, n in v["status"].items() if reason != "kept"]
    return out


def run_synthesis(config: Any, workdir: str | os.PathLike, *,
                  get_model: Callable[[str, str], Any] | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole pipeline for the questions of a synthesis config; resumable per question.

    `get_model(name, dtype)` returns a ChatModel (or an object with its ``render`` and
    ``generate``); by default ``checkpoints.load_model`` wrapped in ChatModel, loaded at most
    once per (name, dtype), so the generator serves as the judge when both are the same model.
    Models are loaded only when a stage has questions left to run.
    """
    from valueprobe_jax.data.selection import select_questions  # noqa: PLC0415

    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise InputError(f"--workdir {workdir}: exists and is not a directory")
    questions = select_questions(data_dir=config.input.data_dir or None,
                                 questions_file=config.input.questions_file or None,
                                 max_questions=config.max_questions)
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise InputError("questions: duplicate ids")
    check_manifest(workdir, config)
    if get_model is None:
        loaded: dict[tuple[str, str], ChatModel] = {}

        def get_model(name: str, dtype: str) -> ChatModel:
            from valueprobe_jax.models import checkpoints  # noqa: PLC0415

            if (name, dtype) not in loaded:
                loaded[(name, dtype)] = ChatModel(checkpoints.load_model(name, dtype=dtype))
            return loaded[(name, dtype)]

    gen = run_generation(config, workdir, questions, get_model, log=log)
    ver = (run_verification(config, workdir, questions, get_model, log=log)
           if config.verification.enabled else None)
    return assemble(config, workdir, questions, gen, ver)
