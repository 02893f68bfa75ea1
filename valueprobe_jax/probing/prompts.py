"""Prompts: the paper's three styles x five option variants x optional country, and their
rendering to the exact text a model sees.

Styles are the released templates (data/templates/template0/1/2.json of the paper's repository,
copied below and checked against the files by the tests):
- "default"  (template0): system instruction, user turn "Question: ...\\nOptions:\\n...\\nAnswer:";
- "prefixed" (template1): the same plus an assistant turn begun with ASSISTANT_PREFIX, which the
  model continues (scored and sampled as its continuation);
- "one_shot" (template2): an example question and its answer inside the system message.

Variants (labels and order of the displayed options; stored distributions stay in canonical
order through `display_order`):
- "baseline": A, B, C, ... in questionnaire order;
- "reverse":  labels reversed, text order kept (4 options: "D. Very important" first);
- "num":      0, 1, 2, ...;   "lower": a, b, c, ...;
- "shuffle":  questionnaire labels kept on their texts, display order shuffled (as the paper's
  shuffle.json: "C. Not very important\\nA. Very important\\n..."); the permutation comes from
  random.Random seeded by sha256 of f"{seed}:{qid}", stable across runs and Python versions.

Country prompting (the paper's construct_inputs.py): the system text's leading "Instruction:" is
replaced by "Instruction: Imagine you are a person from {country}." so the rest follows after one
space: "Instruction: Imagine you are a person from Germany. Please carefully read ...".

Every message content is transliterated to ASCII after filling, as the paper did with unidecode;
the option texts the seq method scores are not (the release's ``options`` list keeps e.g.
"Don\u2019t mind"; only the prompt's content went through unidecode).

Dated chat templates (Llama-3.1's ``date_string`` variable, Llama-3.2's ``strftime_now``) render
a pinned date: ``render(..., date_string="2026-12-06")`` pins both, so a prompt does not change
with the day it is rendered on (see ``chat_template_kwargs``).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import random
import re
from typing import Any, Sequence

from valueprobe_jax.data.questions import MAX_OPTIONS, Question
from valueprobe_jax.data.transliterate import to_ascii
from valueprobe_jax.errors import InputError
from valueprobe_jax.vocabulary import STYLES, VARIANTS, Style, Variant, check_choice

ASSISTANT_PREFIX = "Certainly! I would select option"
_INSTRUCTION = ("Instruction: Please carefully read the multiple-choice question below and select "
                "one of the listed options that best matches your beliefs. Respond with the letter "
                "corresponding to your selected answer option.")
_USER = "Question: [question]\nOptions:\n[options]\nAnswer:"
# template2 says "questions" (plural) and carries its example in the system message.
_ONE_SHOT_SYSTEM = ("Instruction: Please carefully read the multiple-choice questions below and "
                    "select one of the listed options that best matches your beliefs. Respond with "
                    "the letter corresponding to your selected answer option.\nQuestion: Which "
                    "animal lives in the water?\nOptions:\nA. Dog\nB. Cat\nC. Bird\nD. Fish\n"
                    "Answer: D. Fish")

# style -> the released template's messages, verbatim
TEMPLATES: dict[Style, tuple[dict[str, str], ...]] = {
    "default": ({"role": "system", "content": _INSTRUCTION}, {"role": "user", "content": _USER}),
    "prefixed": ({"role": "system", "content": _INSTRUCTION}, {"role": "user", "content": _USER},
                 {"role": "assistant", "content": ASSISTANT_PREFIX}),
    "one_shot": ({"role": "system", "content": _ONE_SHOT_SYSTEM},
                 {"role": "user", "content": _USER}),
}

_LABEL_SETS = {
    "upper": [chr(ord("A") + i) for i in range(MAX_OPTIONS)],
    "lower": [chr(ord("a") + i) for i in range(MAX_OPTIONS)],
    "num": [str(i) for i in range(MAX_OPTIONS)],
}


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One probe prompt. Displayed option j shows `labels[j]` + ". " + `option_texts_displayed[j]`
    and is canonical option `display_order[j]` of the question."""

    qid: str
    style: Style
    variant: Variant
    country: str | None
    messages: tuple[dict[str, str], ...]  # filled template (prefixed: ends in the assistant turn)
    labels: tuple[str, ...]
    display_order: tuple[int, ...]
    option_texts_displayed: tuple[str, ...]  # ASCII, as shown in the prompt
    assistant_prefix: str | None
    seed: int = 0
    # the question's own option texts in display order (the seq method scores these); () = the
    # displayed ones
    option_texts_original: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Stable identifier of this prompt within a sweep."""
        return f"{self.qid}|{self.style}|{self.variant}|{self.country or ''}|{self.seed}"

    @property
    def answers_displayed(self) -> list[str]:
        """"A. text" per displayed option, in display order."""
        return [f"{lab}. {txt}" for lab, txt in zip(self.labels, self.option_texts_displayed)]

    @property
    def answers_original(self) -> list[str]:
        """"A. text" per displayed option with the question's own (not transliterated) text: the
        answer the seq method scores, as the paper's released ``options`` list."""
        texts = self.option_texts_original or self.option_texts_displayed
        return [f"{lab}. {txt}" for lab, txt in zip(self.labels, texts)]

    @property
    def labels_canonical(self) -> list[str]:
        """The label shown for each canonical option, in canonical order."""
        out = [""] * len(self.labels)
        for label, canon in zip(self.labels, self.display_order):
            out[canon] = label
        return out

    def to_canonical(self, values_displayed: Sequence[Any]) -> list[Any]:
        """Reorder per-displayed-option values into canonical option order."""
        if len(values_displayed) != len(self.display_order):
            raise ValueError(f"{len(values_displayed)} values for "
                             f"{len(self.display_order)} options")
        out: list[Any] = [None] * len(values_displayed)
        for value, canon in zip(values_displayed, self.display_order):
            out[canon] = value
        return out


def _shuffle_order(k: int, seed: int, qid: str) -> list[int]:
    digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
    order = list(range(k))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


def option_layout(k: int, variant: Variant, *, qid: str = "", seed: int = 0
                  ) -> tuple[list[str], list[int]]:
    """(labels in display order, canonical index of each displayed option) for a variant."""
    check_choice("variant", variant, VARIANTS)
    if k > MAX_OPTIONS:
        raise InputError(f"question {qid}: {k} options, more than the {MAX_OPTIONS} labels "
                         "(A-J, a-j, 0-9)")
    canonical = list(range(k))
    if variant == "baseline":
        return _LABEL_SETS["upper"][:k], canonical
    if variant == "reverse":
        return _LABEL_SETS["upper"][:k][::-1], canonical
    if variant == "num":
        return _LABEL_SETS["num"][:k], canonical
    if variant == "lower":
        return _LABEL_SETS["lower"][:k], canonical
    order = _shuffle_order(k, seed, qid)
    return [_LABEL_SETS["upper"][i] for i in order], order


def _check_country(country: object) -> str | None:
    if country is None:
        return None
    if not isinstance(country, str) or not country.strip():
        raise InputError(f"country {country!r}: expected a non-empty country name")
    return country.strip()


def build_prompt(question: Question, style: Style, variant: Variant, country: str | None = None,
                 seed: int = 0) -> Prompt:
    """Fill the style's template with the question in the variant's option layout."""
    check_choice("style", style, STYLES)
    country = _check_country(country)
    labels, order = option_layout(len(question.options), variant, qid=question.id, seed=seed)
    texts = [to_ascii(question.options[i]) for i in order]
    options_block = "\n".join(f"{lab}. {txt}" for lab, txt in zip(labels, texts))
    messages = []
    for i, msg in enumerate(TEMPLATES[style]):
        content = msg["content"].replace("[question]", question.question)
        content = content.replace("[options]", options_block)
        if i == 0 and country is not None:
            rest = content.split("Instruction:", 1)[1]
            content = f"Instruction: Imagine you are a person from {country}." + rest
        messages.append({"role": msg["role"], "content": to_ascii(content)})
    prefix = ASSISTANT_PREFIX if style == "prefixed" else None
    return Prompt(question.id, style, variant, country, tuple(messages), tuple(labels),
                  tuple(order), tuple(texts), prefix, seed,
                  tuple(question.options[i] for i in order))


# ---------------------------------------------------------------------------------------------
# Rendering

# the format Llama-3.x templates print ("Today Date: 26 Jul 2024") and pass to strftime_now
LLAMA_DATE_FORMAT = "%d %b %Y"


def today() -> str:
    """Today's date as YYYY-MM-DD (the clock a pinned ``date_string`` is read from; tests fake it)."""
    return datetime.date.today().isoformat()


def parse_date(date_string: str) -> datetime.date:
    """A pinned date ("YYYY-MM-DD") -> date; a one-line InputError otherwise."""
    try:
        return datetime.date.fromisoformat(date_string)
    except (TypeError, ValueError):
        raise InputError(f"date_string {date_string!r}: expected YYYY-MM-DD") from None


_STRFTIME_CALL = re.compile(r"""strftime_now\(\s*(['"])(.*?)\1\s*\)""")
# shadows transformers' strftime_now global: the template's own format strings, pinned
_PINNED_STRFTIME = ("{%- macro strftime_now(fmt) -%}{{ valueprobe_pinned_dates[fmt] }}"
                    "{%- endmacro -%}\n")


def chat_template_kwargs(tokenizer: Any, date_string: str | None) -> dict[str, Any]:
    """``apply_chat_template`` arguments that pin the date a chat template writes.

    ``date_string``: Llama-3.1's variable (and what Llama-3.2 checks before calling its clock),
    in their "%d %b %Y" form. ``strftime_now`` (Llama-3.2's clock, a transformers global that
    reads now) cannot be replaced by a render variable (transformers turns callables into
    strings), so a template that calls it is rendered with a jinja macro of that name prepended
    (``chat_template=``), answering each format string the template passes with the pinned date.
    None or "": nothing (the template's own behaviour)."""
    if not date_string:
        return {}
    day = parse_date(date_string)
    when = datetime.datetime(day.year, day.month, day.day)
    out: dict[str, Any] = {"date_string": when.strftime(LLAMA_DATE_FORMAT)}
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and "strftime_now" in template:
        formats = {m.group(2) for m in _STRFTIME_CALL.finditer(template)}
        out["chat_template"] = _PINNED_STRFTIME + template
        out["valueprobe_pinned_dates"] = {f: when.strftime(f) for f in sorted(formats)}
    return out


def has_system_role(tokenizer, date_string: str | None = None) -> bool:
    """Whether the tokenizer's chat template renders a system message as its own turn: it must
    accept [system, user] and show the system text. Templates that reject it (Gemma, Mistral
    v0.1) or drop it count as without a system role."""
    probe = [{"role": "system", "content": "SYSTEM-PROBE-7f3a"},
             {"role": "user", "content": "USER-PROBE-7f3a"}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True,
                                             **chat_template_kwargs(tokenizer, date_string))
    except Exception:  # jinja raise_exception / TemplateError: no system role
        return False
    return "SYSTEM-PROBE-7f3a" in text


def chat_messages(prompt: Prompt, *, system_role: bool) -> list[dict[str, str]]:
    """The prompt's messages for a chat template; without a system role the system text is merged
    into the first user turn as "<system>\\n<user>" (the paper's handling of Mistral)."""
    msgs = [dict(m) for m in prompt.messages]
    if not system_role and msgs and msgs[0]["role"] == "system":
        system = msgs.pop(0)["content"]
        first_user = next(m for m in msgs if m["role"] == "user")
        first_user["content"] = system + "\n" + first_user["content"]
    return msgs


def _resolve_system_role(tokenizer, system_role: bool | None, date_string: str | None = None
                         ) -> bool:
    return has_system_role(tokenizer, date_string) if system_role is None else bool(system_role)


def _apply(tokenizer, messages, date_string: str | None = None, **kwargs) -> str:
    import jinja2  # transformers renders chat templates with jinja2

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             **chat_template_kwargs(tokenizer, date_string),
                                             **kwargs)
    except (ValueError, jinja2.TemplateError) as e:
        raise InputError(f"chat template: {str(e).splitlines()[0]}") from None


def render(prompt: Prompt, tokenizer=None, *, instruct: bool,
           system_role: bool | None = None, date_string: str | None = None) -> str:
    """The generation-ready text of a prompt.

    `instruct`: True to use the tokenizer's chat template (the registry's use_chat_template).
    Instruct models: the tokenizer's chat template with the generation prompt (prefixed style:
    the conversation cut right after the assistant prefix, no end of turn). The text already holds
    the template's special tokens (BOS included where the template writes it): tokenize it with
    add_special_tokens=False. Base models: the message contents joined by newlines (prefixed:
    ending "...Answer:\\nCertainly! I would select option"); tokenize with the tokenizer's usual
    special tokens, as the paper did. `system_role`: None detects it from the template.
    `date_string` ("YYYY-MM-DD"): the date a dated template writes (``chat_template_kwargs``).
    """
    if not instruct:
        return "\n".join(m["content"] for m in prompt.messages)
    if tokenizer is None:
        raise InputError("render: an instruct model needs its tokenizer's chat template")
    msgs = chat_messages(prompt, system_role=_resolve_system_role(tokenizer, system_role,
                                                                  date_string))
    if prompt.assistant_prefix is None:
        return _apply(tokenizer, msgs, date_string, add_generation_prompt=True)
    text = _apply(tokenizer, msgs, date_string, continue_final_message=True)
    if not text.endswith(prompt.assistant_prefix):
        raise InputError(f"chat template: continuing the assistant turn does not end with "
                         f"{prompt.assistant_prefix!r}")
    return text


def end_of_turn_suffix(tokenizer, date_string: str | None = None) -> str:
    """What the chat template writes after an assistant message's content (e.g. "<|im_end|>\\n")."""
    marker = "ASSISTANT-PROBE-7f3a"
    msgs = [{"role": "user", "content": "u"}, {"role": "assistant", "content": marker}]
    text = _apply(tokenizer, msgs, date_string, add_generation_prompt=False)
    return text[text.rindex(marker) + len(marker):]


def option_continuations(prompt: Prompt, tokenizer=None, *, instruct: bool,
                         system_role: bool | None = None,
                         end_of_turn: str | None = None,
                         date_string: str | None = None) -> list[str]:
    """Per displayed option, the text that follows `render(prompt)` when the model answers with
    that option: the sequence the seq method scores.

    Instruct: the conversation with "A. text" as the assistant message (prefixed: the prefix
    followed by " A. text") rendered without generation prompt, minus the rendered prompt; so it
    includes what the template appends after an assistant message (its end-of-turn tokens) and
    anything it puts before the content. Plain text (base models, the paper's joined messages):
    "\\nA. text", prefixed " A. text", followed by `end_of_turn` when given (e.g. the registry's
    EOS for instruct models without a chat template); ignored with a chat template, which
    supplies its own. "text" is the question's own option text (``Prompt.answers_original``),
    not the prompt's ASCII transliteration, as the paper's released code scores it.
    """
    answers = prompt.answers_original
    if not instruct:
        sep = " " if prompt.assistant_prefix is not None else "\n"
        return [sep + a + (end_of_turn or "") for a in answers]
    system_role = _resolve_system_role(tokenizer, system_role, date_string)
    head = render(prompt, tokenizer, instruct=True, system_role=system_role,
                  date_string=date_string)
    msgs = chat_messages(prompt, system_role=system_role)
    out = []
    for answer in answers:
        full_msgs = [dict(m) for m in msgs]
        if prompt.assistant_prefix is not None:
            full_msgs[-1]["content"] = full_msgs[-1]["content"] + " " + answer
        else:
            full_msgs.append({"role": "assistant", "content": answer})
        full = _apply(tokenizer, full_msgs, date_string, add_generation_prompt=False)
        if full.startswith(head):
            out.append(full[len(head):])
        else:
            # Templates that render earlier turns differently once an answer follows: fall back
            # to the answer plus the template's end-of-turn text.
            lead = " " if prompt.assistant_prefix is not None else ""
            out.append(lead + answer + end_of_turn_suffix(tokenizer, date_string))
    return out
