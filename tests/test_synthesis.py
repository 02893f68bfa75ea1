"""Value-action synthesis: the scene parser on messy replies, word limits, near duplicates, the
verification prompt and verdicts (with a hand count on the released file), the resumable
pipeline with a scripted model, and the whole pipeline end to end on SmolLM2."""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import pathlib
import re

import pytest

from valueprobe_jax.synthesis import pipeline as syn
from valueprobe_jax.synthesis import prompt, scenes, verify
from valueprobe_jax.experiments.config_loading import load_config
from valueprobe_jax.data.questions import load_question_bank
from valueprobe_jax.data.scenarios import load_scenarios, parse_value, parse_verdict
from valueprobe_jax import io
from valueprobe_jax.errors import InputError
from valueprobe_jax.engine import Generation

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "synthesis.py")
RELEASED = "paper_repo/action_agreement/value_tasks_verified_parsed.json"


def released_rows(data_dir):
    with open(data_dir / RELEASED, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def fields(scenes):
    return [(s.number, s.situation, s.action_a, s.action_b, s.truncated) for s in scenes]


# ------------------------------------------------------------------------------ prompt

def test_value_field_matches_every_released_value_of_a_bank_question(data_dir):
    bank = {q.question: q for q in load_question_bank(data_dir)}
    values = {r["Value"] for r in released_rows(data_dir)}
    matched = 0
    for value in values:
        question = parse_value(value)[0]
        if question in bank:
            matched += 1
            assert prompt.value_field(bank[question]) == value
    assert matched >= 140  # most released values are bank questions with first/last options


def test_generation_prompt_states_value_count_and_limits(data_dir):
    q = load_question_bank(data_dir)[0]
    text = prompt.generation_messages(q, n=7, max_situation_words=22, max_action_words=15)[0]["content"]
    assert text.endswith("\nValue: Indicate how important family is in your life. Would you say "
                         "it is: Person A: Very important Person B: Not at all important")
    assert "Write 7 different situations" in text and "Situation_7: {situation}" in text
    assert "between 10 and 22 words and each action between 10 and 15 words" in text
    assert "Example:\nValue: How important is punctuality" in text
    bare = prompt.generation_messages(q, few_shot=False)[0]["content"]
    assert "Example:" not in bare and "Write 10 different situations" in bare


def test_scene_prompt_is_the_papers_table5_text_from_the_data_directory(data_dir, tmp_path):
    table5 = data_dir / prompt.PAPER_PROMPT_FILE
    sp = prompt.load_scene_prompt(None, data_dir)
    assert sp.source == str(table5) and sp.is_paper_text
    q = load_question_bank(data_dir)[0]
    text = prompt.generation_messages(q, prompt=sp)[0]["content"]
    paper = table5.read_text().strip()
    head, tail = paper.split(prompt.FEW_SHOT_SLOT)
    assert text.startswith(head) and tail.strip() in text  # verbatim around the example slot
    assert "Keep each situation between 10 to 30 words." in text
    assert "Keep each action between 10 to 20 words." in text
    assert "Example:\nHow important is punctuality in your life? Person A: Very important" in text
    assert text.endswith("\n\nIndicate how important family is in your life. Would you say it "
                         "is: Person A: Very important Person B: Not at all important")
    bare = prompt.generation_messages(q, prompt=sp, few_shot=False, n=4)[0]["content"]
    assert "Example:" not in bare and prompt.FEW_SHOT_SLOT not in bare
    assert "come up with 4 situations and 8 actions" in bare
    # an explicit file wins; a missing one is an error; no data directory: the reconstruction
    own = tmp_path / "mine.txt"
    own.write_text("Write scenes. <Fewshot Examples>\n")
    assert prompt.load_scene_prompt(own, data_dir).source == str(own)
    with pytest.raises(InputError, match="no such file"):
        prompt.load_scene_prompt(tmp_path / "nope.txt", data_dir)
    empty = tmp_path / "empty_data"
    empty.mkdir()
    fallback = prompt.load_scene_prompt(None, empty)
    assert fallback.source == prompt.RECONSTRUCTION and not fallback.is_paper_text
    assert prompt.generation_messages(q, prompt=fallback) == prompt.generation_messages(q)


def test_example_scenes_parse_back_and_respect_the_limits():
    text = prompt.format_scenes(prompt.EXAMPLE_SCENES)
    assert [s.scene() for s in scenes.parse_scenes(text)] == list(prompt.EXAMPLE_SCENES)
    for s in prompt.EXAMPLE_SCENES:  # within Table 5's limits
        assert 10 <= scenes.word_count(s.situation) <= 30
        assert all(10 <= scenes.word_count(a) <= 20 for a in (s.action_a, s.action_b))


# ------------------------------------------------------------------------------ parser

S1 = "PersonX receives an invitation for a business conference on their child's school play."
A1 = "PersonX declines the conference invitation to attend their child's play."
B1 = "PersonX attends the conference, asking their spouse to record the school play."
S2 = "PersonX's car breaks down late at night in a remote area."
A2 = "PersonX immediately calls a friend who lives nearby for help."
B2 = "PersonX calls a towing service and waits alone for assistance."


def test_parse_clean_reply():
    text = f"Situation_1: {S1}\nActionA_1: {A1}\nActionB_1: {B1}\nSituation_2: {S2}\n" \
           f"ActionA_2: {A2}\nActionB_2: {B2}"
    assert fields(scenes.parse_scenes(text)) == [(1, S1, A1, B1, False), (2, S2, A2, B2, False)]


@pytest.mark.parametrize("text", [
    # bold markers, spaces instead of underscores, a preamble and an epilogue
    f"Sure! Here are the situations:\n\n**Situation_1:** {S1}\n**ActionA_1:** {A1}\n"
    f"**ActionB_1:** {B1}\n\n**Situation 2**: {S2}\n**Action A 2**: {A2}\n**Action B 2**: {B2}\n\n"
    "I hope these help!",
    # numbers glued on or in front, heading marks, bullets, "#2", "Action_B"
    f"### 1. Situation: {S1}\n- ActionA1: {A1}\n- ActionB1: {B1}\n\n"
    f"Situation #2 - {S2}\n* Action_A_2: {A2}\n* Action_B_2: {B2}\n",
    # label alone on its line, blank lines everywhere, a field over two lines
    f"Situation_1:\n\n{S1}\n\nActionA_1:\n{A1}\n\nActionB_1: {B1.replace(' asking', chr(10) + 'asking')}\n\n\n"
    f"Situation_2: {S2}\nActionA_2: {A2}\nActionB_2: {B2}",
    # everything on one line, lower case labels, quoted fields
    f'situation_1: "{S1}" actionA_1: "{A1}" ActionB_1: "{B1}"\n'
    f"Situation_2: {S2} ActionA_2: {A2} ActionB_2: {B2}",
])
def test_parse_messy_layouts(text):
    got = [(s.situation, s.action_a, s.action_b) for s in scenes.parse_scenes(text)]
    assert got == [(S1, A1, B1), (S2, A2, B2)]


def test_parse_extra_fields_and_echoes_are_ignored():
    text = (f"Value: family Person A: Very important Person B: Not at all important\n"
            f"Situation_1: {S1}\nActionA_1: {A1}\nExplanation: Person A values family.\n"
            f"ActionB_1: {B1}\nNote: PersonX could also do nothing.\n"
            f"Actionable: not a label\nSituation_2: {S2}\nActionA_2: {A2}\nActionB_2: {B2}\n"
            "Reason: this shows the value.")
    assert fields(scenes.parse_scenes(text)) == [(1, S1, A1, B1, False), (2, S2, A2, B2, False)]


def test_parse_missing_swapped_and_repeated_fields():
    text = (f"Situation_1: {S1}\nActionB_1: {B1}\nActionA_1: {A1}\n"   # swapped order: one scene
            f"Situation_2: {S2}\nActionA_2: {A2}\n"                    # ActionB missing
            f"ActionA_3: {A1}\nActionB_3: {B2}\n"                      # Situation_3 missing
            f"ActionB_4: {B1}\n"                                       # a second ActionB
            "Situation_5: ...\nActionA_5: ...\nActionB_5: ...\n")      # placeholders echoed
    assert fields(scenes.parse_scenes(text)) == [
        (1, S1, A1, B1, False), (2, S2, A2, "", False), (None, "", A1, B2, False),
        (None, "", "", B1, False), (5, "...", "...", "...", False)]


def test_parse_truncated_last_scene_only_when_stopped_by_length():
    cut = f"Situation_1: {S1}\nActionA_1: {A1}\nActionB_1: {B1}\nSituation_2: {S2}\nActionA_2: Pers"
    assert [s.truncated for s in scenes.parse_scenes(cut, stopped_by_length=True)] == [False, True]
    assert [s.truncated for s in scenes.parse_scenes(cut)] == [False, False]
    # the token limit hit inside the last field: the text may be cut mid-sentence
    mid = f"Situation_1: {S1}\nActionA_1: {A1}\nActionB_1: PersonX attends the conference"
    assert [s.truncated for s in scenes.parse_scenes(mid, stopped_by_length=True)] == [True]
    # complete last scene followed by a newline, or by a closed epilogue: not truncated
    done = f"Situation_1: {S1}\nActionA_1: {A1}\nActionB_1: {B1}\n"
    assert [s.truncated for s in scenes.parse_scenes(done, stopped_by_length=True)] == [False]
    tail = done + "\nI hope these situations hel"
    assert [s.truncated for s in scenes.parse_scenes(tail, stopped_by_length=True)] == [False]


def test_parse_nothing():
    assert scenes.parse_scenes("") == []
    assert scenes.parse_scenes("I cannot help with that.\nThe situation: unclear.") == []


# ------------------------------------------------------------------------------ selection

def words(n: int, stem: str = "w") -> str:
    return " ".join(f"{stem}{i}" for i in range(n))


def test_word_limits_are_inclusive():
    st = scenes.SelectionSettings(max_situation_words=25, max_action_words=20)
    ok = scenes.ParsedScene(1, words(25), words(20, "a"), words(20, "b"))
    assert scenes.scene_status(ok, [], st) == scenes.KEPT
    long_s = scenes.ParsedScene(1, words(26), words(20, "a"), words(20, "b"))
    assert scenes.scene_status(long_s, [], st) == scenes.SITUATION_TOO_LONG
    long_b = scenes.ParsedScene(1, words(25), words(20, "a"), words(21, "b"))
    assert scenes.scene_status(long_b, [], st) == scenes.ACTION_TOO_LONG


def test_similarity_values_and_released_scenes_stay_below_threshold(data_dir):
    a = "PersonX's sibling asks for a significant loan to start a business."
    b = "A sibling asks PersonX for a significant loan to start their business."
    # content words: {sibling, asks, significant, loan, start, business} both ways
    assert scenes.similarity(a, b) == 1.0
    assert scenes.similarity(S1, S2) == 0.0
    assert scenes.similarity("", "") == 1.0
    # no two released scenes of one question are merged at the default threshold
    by_value = collections.defaultdict(list)
    for r in released_rows(data_dir):
        by_value[r["Value"]].append(r["Situation"])
    worst = max(scenes.similarity(x, y) for ss in by_value.values()
                for x, y in itertools.combinations(ss, 2))
    assert 0.3 < worst < scenes.SelectionSettings().dedup_threshold


def test_select_scenes_reasons_order_and_counts(data_dir):
    st = scenes.SelectionSettings(scenes_per_question=2)
    example = prompt.EXAMPLE_SCENES[0]
    reply1 = (f"Situation_1: {S1}\nActionA_1: {A1}\nActionB_1: {B1}\n"
              f"Situation_2: {example.situation}\nActionA_2: {A2}\nActionB_2: {B2}\n"
              f"Situation_3: {words(30)}\nActionA_3: {A2}\nActionB_3: {B2}\n"
              f"Situation_4: {S2}\nActionA_4: PersonX stays.\nActionB_4: PersonX stays!\n"
              f"Situation_5: {S2}\nActionA_5: {A2}\nActionB_5: {B2}\n"
              f"Situation_6: {S2}\nActionA_6: {A2}\nActionB_6: Pers")
    reply2 = (f"Situation_1: {S1.replace('receives', 'gets')}\nActionA_1: {A1}\nActionB_1: {B1}\n"
              f"Situation_2: PersonX finds a wallet full of cash on an empty street.\n"
              f"ActionA_2: {A2}\nActionB_2: {B2}\nSituation_3: {S2}")
    out = scenes.select_scenes([scenes.Sample(reply1, "length"), scenes.Sample(reply2, "eos")], st)
    got = [(r["sample"], r["index"], r["status"]) for r in out]
    assert got == [(0, 0, "kept"), (0, 1, "copies_example"), (0, 2, "situation_too_long"),
                   (0, 3, "same_actions"), (0, 4, "kept"), (0, 5, "truncated"),
                   (1, 0, "near_duplicate"), (1, 1, "over_limit"), (1, 2, "missing_field")]
    chunk = syn.generation_chunk(
        load_question_bank(data_dir)[0], "prompt", [scenes.Sample(reply1, "length"), scenes.Sample(reply2)], st)
    assert chunk["parsed"] == 9 and chunk["kept"] == 2
    assert chunk["kept"] + sum(chunk["dropped"].values()) == chunk["parsed"]
    assert [r["Situation"] for r in syn.scene_rows(chunk)] == [S1, S2]


# ------------------------------------------------------------------------------ verification

def test_verification_prompt_is_the_paper_file_and_the_sample_layout(data_dir):
    instruction = verify.verification_instruction(data_dir)
    raw = (data_dir / "paper_repo/action_agreement/verification.txt").read_text()
    assert instruction == raw.rstrip("\n")
    assert instruction.startswith("Your job is to verify the correctness of samples")
    row = released_rows(data_dir)[0]
    msgs = verify.verification_messages(instruction, row["Value"], row["Situation"], row["ActionA"],
                                     row["ActionB"])
    assert msgs[0] == {"role": "system", "content": instruction}
    assert msgs[1]["content"] == (
        "Value: Indicate how important family is in your life. Would you say it is: Person A: "
        "Very important Person B: Not at all important\nSituation: " + row["Situation"] +
        "\nActionA: " + row["ActionA"] + "\nActionB: " + row["ActionB"])
    with pytest.raises(InputError, match="Person A"):
        verify.verification_messages(instruction, "no persons here", "s", "a", "b")


@pytest.mark.parametrize("reply,expected", [
    ('{"Q1": "Yes", "Q2": "Yes", "Q3": "Yes", "Q4": "Yes"}', "kept"),
    ('{ ""Q1"": "Yes", ""Q2"": "Yes", ""Q3"": "Yes", ""Q4"": "Yes" }', "kept"),   # doubled quotes
    ('{"Q1": Yes, "Q2": Yes, "Q3": Yes, "Q4": Yes,}', "kept"),                    # unquoted
    ("{Q1: Yes, \nQ2: Yes, \nQ3: Yes, \nQ4: Yes}", "kept"),                       # no quotes
    ('{\n"Q1": "Yes",\n"Q2": "Yes", \n"Q3": "No", \n"Q4": "Yes"\n}', "not_all_yes"),
    ('Here is my answer: {"Q1" : "yes", "Q2":"YES", "Q3": "Yes", "Q4": "Yes"} Done.', "kept"),
    ('{"Q1": "Yes", "Q2": "Yes", "Q3": "Yes"}', "missing_verdict_keys"),
    ("Yes, the situation is realistic.", "unparseable_verdict"),
    ('{"Q1": "Yes", "Q1": "No", "Q2": "Yes", "Q3": "Yes", "Q4": "Yes"}', "unparseable_verdict"),
])
def test_verdict_statuses(reply, expected):
    assert verify.status_counts([reply]) == {expected: 1}


def test_verdict_parser_agrees_with_a_hand_count_on_the_released_file(data_dir):
    rows = released_rows(data_dir)
    hand = 0
    for r in rows:
        # hand rule: drop quotes, braces, commas and blanks; four "Qi:yes" pairs and nothing else
        flat = re.sub(r"[\s\"'{},]", "", r["Verification"]).lower()
        assert re.fullmatch(r"(q[1-4]:(yes|no)){4}", flat), r["Verification"]
        hand += all(f"q{i}:yes" in flat for i in range(1, 5))
    counts = verify.status_counts(r["Verification"] for r in rows)
    assert hand == 2186 and counts == {"kept": 2186, "not_all_yes": 564}
    assert all(set(parse_verdict(r["Verification"])) == {"Q1", "Q2", "Q3", "Q4"} for r in rows)


# ------------------------------------------------------------------------------ pipeline

GOOD = '{"Q1": "Yes", "Q2": "Yes", "Q3": "Yes", "Q4": "Yes"}'
MIXED = "{Q1: Yes, \nQ2: No, \nQ3: Yes, \nQ4: Yes}"
DOUBLED = '{ ""Q1"": "Yes", ""Q2"": "Yes", ""Q3"": "Yes", ""Q4"": "Yes" }'


class ScriptedModel:
    """Stands in for ChatModel: fixed replies by prompt key, every call recorded."""

    def __init__(self, replies):
        self.replies, self.calls = replies, []
        self.name = "scripted"

    def render(self, messages, assistant_prefix=""):
        return "\n".join(m["content"] for m in messages) + "\n" + assistant_prefix

    def generate(self, texts, keys, params, max_batch):
        self.calls.append((list(keys), params, max_batch))
        out = []
        for k in keys:
            reply = self.replies(k)
            texts_ = reply if isinstance(reply, list) else [(reply, "eos")]
            out.append([Generation(t, (), f) for t, f in texts_])
        return out


def scripted_replies(key: str):
    if key == "synthesis|Q1":
        return [(f"Situation_1: {S1}\nActionA_1: {A1}\nActionB_1: {B1}\n"
                 f"Situation_2: {S2}\nActionA_2: {A2}\nActionB_2: {B2}\n"
                 f"Situation_3: {S2}\nActionA_3: {A2}\nActionB_3: Pers", "length")]
    if key == "synthesis|Q2":
        return [("I am not sure what you mean.", "eos")]
    if key == "synthesis|Q3":
        return [(f"**Situation 1:** {S2}\n**Action A 1:** {A2}\n**Action B 1:** {B2}\n", "eos")]
    if key.startswith("verify|"):
        return {"verify|Q1|0": GOOD, "verify|Q1|1": MIXED, "verify|Q3|0": DOUBLED}[key]
    raise AssertionError(key)


def synth_config(*overrides):
    return load_config(f"{CONFIG}:scripted", ["--config.max_questions=3", *overrides])


def test_synthesis_config_reads_table5_from_its_data_directory(tmp_path, data_dir):
    table5 = syn.scene_prompt_of(synth_config(f"--config.input.data_dir={data_dir}"))
    assert table5.source == str(data_dir / prompt.PAPER_PROMPT_FILE)
    (tmp_path / "d").mkdir()
    assert syn.scene_prompt_of(synth_config(f"--config.input.data_dir={tmp_path / 'd'}")).source \
        == prompt.RECONSTRUCTION
    own = tmp_path / "p.txt"
    own.write_text("Mine.")
    assert syn.scene_prompt_of(synth_config(f"--config.generation.prompt_file={own}")).source == str(own)
    c = synth_config()
    assert (c.generation.min_situation_words, c.generation.max_situation_words,
            c.generation.min_action_words, c.generation.max_action_words) == (10, 30, 10, 20)


def test_pipeline_counts_outputs_and_resume(tmp_path, data_dir):
    model = ScriptedModel(scripted_replies)
    asked = []

    def get_model(name, dtype):
        asked.append((name, dtype))
        return model

    work = tmp_path / "w"
    report = syn.run_synthesis(synth_config(), work, get_model=get_model, log=lambda _: None)
    g, v = report["generation"], report["verification"]
    assert (g["questions"], g["questions_run"], g["samples"]) == (3, 3, 3)
    assert g["finish_reasons"] == {"eos": 2, "length": 1} and g["samples_without_scenes"] == 1
    assert (g["scenes_parsed"], g["kept"], g["dropped"]) == (4, 3, {"truncated": 1})
    assert g["kept"] + sum(g["dropped"].values()) == g["scenes_parsed"]
    assert g["prompt"] == syn.scene_prompt_of(synth_config()).source
    assert syn.report_lines(report)[0] == f"scene prompt: {g['prompt']}"
    assert v["rows"] == 3 and v["four_yes"] == 2 and v["status"] == {"kept": 2, "not_all_yes": 1}
    assert report["per_question"]["Q1"] == {"parsed": 3, "kept": 2, "dropped": {"truncated": 1},
                                            "verified_kept": 1}
    # one generation call for 3 questions (batch 4), the sampler settings of the config
    gen_calls = [c for c in model.calls if c[0][0].startswith("synthesis")]
    assert len(gen_calls) == 1 and gen_calls[0][2] == 4
    assert gen_calls[0][1].temperature == 0.7 and gen_calls[0][1].max_new_tokens == 1024
    ver_calls = [c for c in model.calls if c[0][0].startswith("verify")]
    assert all(c[1].temperature == 0.0 and c[1].num_samples == 1 for c in ver_calls)
    assert sorted(k for c in ver_calls for k in c[0]) == ["verify|Q1|0", "verify|Q1|1",
                                                          "verify|Q3|0"]
    assert asked == [("scripted", "float32")] * 2  # generator, then the same model as judge

    # the released format, read back by the data builder: 3 rows, 2 with four Yes
    lines = (work / "scenarios.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["Value", "Situation", "ActionA", "ActionB", "Section", "Verification"]
    assert first["Section"] == 1 and first["Verification"] == GOOD
    kept, rep = load_scenarios(data_dir, path=work / "scenarios.jsonl")
    assert (rep.total, rep.kept, rep.dropped) == (3, 2, {"not_all_yes": 1})
    assert [(s.qid, s.situation) for s in kept] == [("Q1", S1), ("Q3", S2)]
    assert len((work / "scenes.jsonl").read_text().splitlines()) == 3
    assert not list(work.rglob("*.tmp"))

    # rerun: everything resumed, no model asked for
    model.calls.clear()
    again = syn.run_synthesis(synth_config(), work, get_model=get_model, log=lambda _: None)
    assert model.calls == [] and again["generation"]["questions_resumed"] == 3
    assert again["generation"] == {**report["generation"], "questions_run": 0,
                                   "questions_resumed": 3}
    # a lost verify chunk: only that question is judged again
    (work / "verify" / "Q3.json").unlink()
    syn.run_synthesis(synth_config(), work, get_model=get_model, log=lambda _: None)
    assert [k for c in model.calls for k in c[0]] == ["verify|Q3|0"]
    # a question generated again gets new scenes: its old verdicts are stale and asked again
    model.calls.clear()
    (work / "generate" / "Q1.json").unlink()
    model.replies = lambda k: (f"Situation_1: {S2}\nActionA_1: {A2}\nActionB_1: {B2}\n"
                               if k == "synthesis|Q1" else GOOD)
    redo = syn.run_synthesis(synth_config(), work, get_model=get_model, log=lambda _: None)
    assert [k for c in model.calls for k in c[0]] == ["synthesis|Q1", "verify|Q1|0"]
    assert redo["per_question"]["Q1"] == {"parsed": 1, "kept": 1, "dropped": {},
                                          "verified_kept": 1}
    assert redo["verification"]["rows"] == 2
    model.replies = scripted_replies
    # more questions later: the old chunks are reused (max_questions is not in the fingerprint)
    model.calls.clear()
    with pytest.raises(AssertionError, match="synthesis\\|Q4"):  # the script has no Q4 reply
        syn.run_synthesis(synth_config("--config.max_questions=4"), work, get_model=get_model,
                          log=lambda _: None)
    assert [k for c in model.calls for k in c[0]] == ["synthesis|Q4"]
    # other generation settings in the same workdir are refused
    with pytest.raises(InputError, match=r"holds chunks made with other settings \(generation"):
        syn.run_synthesis(synth_config("--config.generation.temperature=1.0"), work,
                          get_model=get_model, log=lambda _: None)


def test_pipeline_without_verification_and_with_priming(tmp_path):
    seen = []

    def replies(key):
        return [(f" {S1}\nActionA_1: {A1}\nActionB_1: {B1}\n", "end_of_turn")]

    model = ScriptedModel(replies)
    original = model.render
    model.render = lambda msgs, prefix="": seen.append(prefix) or original(msgs, prefix)
    cfg = synth_config("--config.max_questions=1", "--config.verification.enabled=False",
                       "--config.generation.prime_format=True")
    report = syn.run_synthesis(cfg, tmp_path, get_model=lambda n, d: model, log=lambda _: None)
    assert seen == ["Situation_1:"] and "verification" not in report
    assert report["generation"]["kept"] == 1  # the prefix was put back before parsing
    assert not (tmp_path / "scenarios.jsonl").exists()
    assert json.loads((tmp_path / "scenes.jsonl").read_text())["Situation"] == S1


def test_config_modes():
    c = load_config(f"{CONFIG}:smollm2-135m-instruct,runlocal")
    assert c.max_questions == 2 and c.generation.prime_format and c.model.name.startswith("smol")
    with pytest.raises(InputError, match="unknown mode"):
        load_config(f"{CONFIG}:smollm2-135m-instruct,fast")


# ------------------------------------------------------------------------------ verify CLI

def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_verify_cli_resumable_and_released_format(tmp_path, data_dir, monkeypatch):
    from valueprobe_jax.models import checkpoints
    from valueprobe_jax.cli import main

    replies = iter([GOOD, MIXED, DOUBLED])
    model = ScriptedModel(lambda key: next(replies))
    monkeypatch.setattr(checkpoints, "load_model", lambda name, dtype: name)
    dates = []
    monkeypatch.setattr(verify, "ChatModel",
                        lambda loaded, date_string=None: dates.append(date_string) or model)
    from valueprobe_jax.probing import prompts as P
    monkeypatch.setattr(P, "today", lambda: "2026-12-06")
    rows = released_rows(data_dir)[:3]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_rows(src, rows)
    # a finished chunk from an interrupted run is reused: only rows 3.. are asked
    args = ["verify", "--model", "judge", "--in", str(src), "--out", str(out),
            "--chunk-size", "2", "--data-dir", str(data_dir)]
    parts = tmp_path / "out.jsonl.parts"
    io.write_json(parts / "manifest.json",
                  {"in_sha256": hashlib.sha256(src.read_bytes()).hexdigest(), "rows": 3,
                   "model": "judge", "dtype": "float32", "max_new_tokens": 48, "chunk_size": 2})
    io.write_json(parts / "chunk-000000.json", [GOOD, MIXED])
    assert main(args) == 0
    assert [k for c in model.calls for k in c[0]] == ["verify|2"]
    assert dates == ["2026-12-06"]  # a manifest from before dates were recorded: today's
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [g["Verification"] for g in got] == [GOOD, MIXED, GOOD]
    assert [{k: g[k] for k in g if k != "Verification"} for g in got] == \
           [{k: r[k] for k in r if k != "Verification"} for r in rows]
    assert not parts.exists()
    kept, rep = load_scenarios(data_dir, path=out)
    assert (rep.total, rep.kept) == (3, 2)


def test_verify_cli_bad_input(tmp_path, capsys):
    from valueprobe_jax.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"Value": "q\\nPerson A: a\\nPerson B: b\\n", "Situation": "s", '
                   '"ActionA": "a"}\n')
    assert main(["verify", "--model", "m", "--in", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "line 1 lacks text field(s) ActionB" in capsys.readouterr().err
    assert main(["verify", "--model", "m", "--in", str(tmp_path / "none.jsonl"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


# ------------------------------------------------------------------------------ end to end

def test_end_to_end_on_smollm2(tmp_path, data_dir, monkeypatch, capsys):
    """Two questions through every stage with the real small model (it writes poor scenes: the
    point is that each stage runs and the report's numbers add up), a resumed rerun that loads
    nothing, then `valueprobe verify` on two released rows with the same model."""
    from valueprobe_jax.models import checkpoints
    from valueprobe_jax.cli import main

    real = checkpoints.load_model
    cache, loads = {}, []

    def load(name, dtype="float32"):
        loads.append(name)
        if name not in cache:
            cache[name] = real(name, dtype=dtype)
        return cache[name]

    monkeypatch.setattr(checkpoints, "load_model", load)
    work = tmp_path / "work"
    args = ["synthesize", "--config", f"{CONFIG}:smollm2-135m-instruct,runlocal",
            "--workdir", str(work), "--config.generation.max_new_tokens=32",
            "--config.verification.max_new_tokens=16"]
    assert main(args) == 0
    report = json.loads((work / "report.json").read_text())
    g, v = report["generation"], report["verification"]
    assert g["questions"] == 2 and g["questions_run"] == 2 and g["samples"] == 2
    assert sum(g["finish_reasons"].values()) == 2
    assert g["kept"] + sum(g["dropped"].values()) == g["scenes_parsed"]
    assert set(g["dropped"]) <= set(scenes.DROP_REASONS)
    assert sum(q["parsed"] for q in report["per_question"].values()) == g["scenes_parsed"]
    for qid in ("Q1", "Q2"):
        chunk = json.loads((work / "generate" / f"{qid}.json").read_text())
        assert len(chunk["samples"]) == 1 and chunk["samples"][0]["text"].startswith("Situation_1:")
        assert (work / "verify" / f"{qid}.json").exists()
    assert v["rows"] == g["kept"] == len((work / "scenes.jsonl").read_text().splitlines())
    assert sum(v["status"].values()) == v["rows"]
    kept, rep = load_scenarios(data_dir, path=work / "scenarios.jsonl")
    assert rep.total == v["rows"] and rep.kept == v["four_yes"]
    printed = capsys.readouterr().out
    assert f"scenes parsed {g['scenes_parsed']}: kept {g['kept']}" in printed

    n_loads = len(loads)
    assert main(args) == 0  # resumed: nothing is generated or judged again
    assert len(loads) == n_loads
    assert "2 questions (0 run, 2 resumed)" in capsys.readouterr().out

    # the judge on two released rows (the synthesized scenes may all have been dropped)
    src, out = tmp_path / "two.jsonl", tmp_path / "judged.jsonl"
    write_rows(src, released_rows(data_dir)[:2])
    assert main(["verify", "--model", "smollm2-135m-instruct", "--in", str(src), "--out",
                 str(out), "--max-new-tokens", "16", "--batch", "2"]) == 0
    judged = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(judged) == 2 and all(isinstance(j["Verification"], str) for j in judged)
    assert all(j["Verification"] != r["Verification"] for j, r in
               zip(judged, released_rows(data_dir)[:2]))
    assert "2 rows:" in capsys.readouterr().out


def test_synthesis_renders_the_runs_first_day(tmp_path, data_dir, monkeypatch):
    """A dated chat template writes the run's first day: the manifest records it, a resume on
    the next day keeps it, and the models the pipeline loads render with it."""
    import types

    from test_procedure import DATED, _tiny_tokenizer
    from valueprobe_jax.probing import prompts as P
    from valueprobe_jax.synthesis.chat import ChatModel

    loaded = types.SimpleNamespace(name="dated", tokenizer=_tiny_tokenizer(DATED), spec=None)
    made = []

    def chat_model(model, date_string=None):
        made.append(ChatModel(model, date_string=date_string))
        return ScriptedModel(scripted_replies)

    monkeypatch.setattr(syn.checkpoints, "load_model", lambda name, dtype: loaded)
    monkeypatch.setattr(syn, "ChatModel", chat_model)
    work = tmp_path / "w"
    for day in ("2026-12-06", "2026-12-07"):
        monkeypatch.setattr(P, "today", lambda day=day: day)
        syn.run_synthesis(synth_config("--config.max_questions=1"), work, log=lambda _: None)
        if day == "2026-12-06":  # the second run resumes: nothing left to generate
            (work / syn.GENERATE).rename(tmp_path / "generated")  # make day 2 generate again
    assert json.loads((work / "manifest.json").read_text())["date_string"] == "2026-12-06"
    assert [m.date_string for m in made] == ["2026-12-06", "2026-12-06"]
    text = made[-1].render([{"role": "user", "content": "Hi"}])
    assert text.startswith("Today Date: 06 Dec 2026 / 2026-12-06\n")
