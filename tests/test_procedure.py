"""The procedure switch (ours | paper), the fidelity fixes of issue 16 that hold in both
procedures (rows 4, 6, 7) and pinned dates in chat templates; expectations written by hand."""

from __future__ import annotations

import json
import pathlib
import types

import pytest

from valueprobe_jax.data.questions import Question, load_question_bank
from valueprobe_jax.errors import InputError
from valueprobe_jax.experiments import store, sweep
from valueprobe_jax.experiments.config_loading import load_config
from valueprobe_jax.models.generation_config import GenerationConfig
from valueprobe_jax.models.registry import get_spec
from valueprobe_jax.probing import prompts as P
from valueprobe_jax.probing.engine import (ProbeSettings,
                                           rating_sampling, text_sampling, uses_chat_template)
from valueprobe_jax.probing.procedure import PROCEDURES
from valueprobe_jax.vocabulary import COUNTRIES, PROCEDURE_NAMES, VARIANTS

REPO = pathlib.Path(__file__).resolve().parents[1]
ROB = str(REPO / "configs" / "robustness.py")
DEM = str(REPO / "configs" / "demographic.py")
ACT = str(REPO / "configs" / "action_agreement.py")
M = "smollm2-135m-instruct"


def _fields(c):
    """A config without its record of how it was asked for."""
    d = c.to_dict()
    d.pop("config_spec")
    return d


# ------------------------------------------------------------------------ the switch


def test_procedure_table_is_defined_once():
    assert tuple(PROCEDURES) == PROCEDURE_NAMES == ("ours", "paper")
    paper, ours = PROCEDURES["paper"], PROCEDURES["ours"]
    assert paper.countries == ("China", "Egypt", "Mexico", "United States", "Germany")
    assert "Czech" not in paper.countries and ours.countries == COUNTRIES
    assert paper.variants == paper.action_variants == ("baseline", "reverse", "num")
    assert ours.variants == VARIANTS and ours.action_variants == ("baseline",)
    assert (paper.parse_mode, paper.label_lookup, paper.boundary, paper.sampler, paper.ratings,
            paper.rating_parse, paper.verdicts, paper.middle) == (
        "paper", "vocab", "slice", "generation_config", "generation_config", "paper", "strict",
        "second")
    assert (ours.parse_mode, ours.label_lookup, ours.boundary, ours.sampler, ours.ratings,
            ours.rating_parse, ours.verdicts, ours.middle) == (
        "label_aware", "tokenize", "retokenize", "plain", "greedy", "strict", "lenient", "split")


def test_paper_config_from_the_argument():
    c = load_config(f"{ROB}:{M},paper")
    assert c.procedure == "paper" and c.model.name == M
    p, a = c.probe, c.actions
    assert p.parse_mode == "paper" and p.variants == ["baseline", "reverse", "num"]
    assert (p.label_lookup, p.boundary, p.sampler) == ("vocab", "slice", "generation_config")
    assert (a.sampler, a.parse_mode, a.verdicts) == ("generation_config", "paper", "strict")
    assert p.countries == []  # robustness prompts no country in either procedure
    ours = load_config(f"{ROB}:{M}")
    assert ours.procedure == "ours" and ours.probe.parse_mode == "label_aware"
    assert ours.probe.variants == list(VARIANTS) and ours.actions.verdicts == "lenient"


def test_paper_config_from_the_override_is_the_same():
    by_arg = load_config(f"{ROB}:{M},paper")
    assert _fields(load_config(f"{ROB}:{M}", ["--config.procedure=paper"])) == _fields(by_arg)
    assert _fields(load_config(ROB, ["procedure=paper"])) == _fields(by_arg)  # default model
    # the command line wins over the argument
    assert load_config(f"{ROB}:{M},paper", ["procedure=ours"]).procedure == "ours"
    # runlocal combines, in either order, and by override
    small = load_config(f"{ROB}:{M},paper,runlocal")
    assert _fields(small) == _fields(load_config(f"{ROB}:{M},runlocal,paper"))
    assert _fields(small) == _fields(load_config(f"{ROB}:{M},runlocal", ["procedure=paper"]))
    assert small.max_questions == 5 and small.probe.parse_mode == "paper"


def test_explicit_overrides_win_over_the_procedure():
    c = load_config(f"{ROB}:{M},paper", ["--config.probe.variants=baseline",
                                         "--config.probe.parse_mode=label_aware"])
    assert c.probe.variants == ["baseline"] and c.probe.parse_mode == "label_aware"
    assert c.probe.label_lookup == "vocab"  # the rest stays the paper's
    # override order does not matter: procedure is applied under every other override
    d = load_config(f"{ROB}:{M}", ["--config.probe.variants=baseline", "--config.procedure=paper"])
    assert d.probe.variants == ["baseline"] and d.probe.parse_mode == "paper"


def test_experiment_files_take_their_own_part_of_the_table():
    assert load_config(f"{DEM}:{M},paper").probe.countries == [
        "China", "Egypt", "Mexico", "United States", "Germany"]
    assert load_config(f"{DEM}:{M}").probe.countries == list(COUNTRIES)
    assert load_config(f"{ACT}:{M}").probe.variants == ["baseline"]
    assert load_config(f"{ACT}:{M},paper").probe.variants == ["baseline", "reverse", "num"]
    assert load_config(f"{ACT}:{M},paper").actions.verdicts == "strict"


@pytest.mark.parametrize("spec, overrides", [
    (f"{ROB}:{M}", ["--config.procedure=papr"]),
    (f"{ROB}:{M},papr", []),
    (f"{ROB}:{M},paper,ours", []),
])
def test_bad_procedure_is_one_line_naming_the_choices(spec, overrides):
    with pytest.raises(InputError) as e:
        load_config(spec, overrides)
    msg = str(e.value)
    assert "\n" not in msg and "ours" in msg and "paper" in msg


def test_synthesis_has_no_procedure_switch():
    with pytest.raises(InputError, match="no procedure switch"):
        load_config(f"{REPO / 'configs' / 'synthesis.py'}:{M}", ["--config.procedure=paper"])


def test_procedure_is_part_of_the_fingerprint():
    ours, paper = load_config(f"{ROB}:{M}"), load_config(f"{ROB}:{M},paper")
    assert (sweep.manifest_record(ours, 1)["fingerprint"]
            != sweep.manifest_record(paper, 1)["fingerprint"])


def test_settings_from_a_paper_config():
    s = ProbeSettings.from_config(load_config(f"{ACT}:{M},paper"))
    assert (s.parse_mode, s.label_lookup, s.boundary, s.sampler, s.rating_sampler,
            s.rating_parse_mode) == ("paper", "vocab", "slice", "generation_config",
                                     "generation_config", "paper")
    with pytest.raises(InputError, match="boundary 'cut'"):
        ProbeSettings(boundary="cut")


# ------------------------------------------------------------------------ sampling specs

QWEN_GC = GenerationConfig(do_sample=True, temperature=0.7, top_k=20, top_p=0.8,
                           repetition_penalty=1.05, eos_token_ids=(151645, 151643),
                           source="qwen/generation_config.json")


def test_paper_text_sampling_reads_the_generation_config():
    s = ProbeSettings(sampler="generation_config", samples=10, max_new_tokens=64, seed=3)
    spec = text_sampling(s, QWEN_GC)
    # the paper overrides temperature to 1.0 and max_new_tokens to 64; the rest is the file's
    assert (spec.temperature, spec.top_k, spec.top_p, spec.repetition_penalty) == (1.0, 20, 0.8, 1.05)
    assert (spec.max_new_tokens, spec.num_samples, spec.seed) == (64, 10, 3)
    assert spec.stop_token_ids == (151645, 151643) and not spec.default_end_of_turn
    # no file: transformers 4.45 defaults (top_k 50)
    d = text_sampling(s, GenerationConfig())
    assert (d.temperature, d.top_k, d.top_p, d.repetition_penalty) == (1.0, 50, 1.0, 1.0)
    # ours: the configured numbers
    o = text_sampling(ProbeSettings(temperature=0.5, top_k=7, top_p=0.9), QWEN_GC)
    assert (o.temperature, o.top_k, o.top_p, o.repetition_penalty) == (0.5, 7, 0.9, 1.0)
    assert o.stop_token_ids == () and o.default_end_of_turn


def test_paper_ratings_follow_do_sample():
    s = ProbeSettings(rating_sampler="generation_config", rating_max_new_tokens=20)
    sampled = rating_sampling(s, QWEN_GC)
    assert (sampled.temperature, sampled.top_k, sampled.top_p, sampled.max_new_tokens) == (
        0.7, 20, 0.8, 20)
    greedy = rating_sampling(s, GenerationConfig(eos_token_ids=(2,)))  # Mistral-I, Falcon-I
    assert greedy.temperature == 0.0 and greedy.stop_token_ids == (2,)
    assert rating_sampling(ProbeSettings(), QWEN_GC).temperature == 0.0  # ours: greedy


def test_paper_sampling_reaches_the_engine():
    """The paper's text sampling runs the engine's "paper" processing with the checkpoint's
    repetition penalty and stops on exactly its eos list; ours keeps the plain program."""
    paper = text_sampling(ProbeSettings(sampler="generation_config"), QWEN_GC).params()
    assert (paper.processing, paper.repetition_penalty, paper.top_k, paper.top_p,
            paper.temperature) == ("paper", 1.05, 20, 0.8, 1.0)
    ours = text_sampling(ProbeSettings(), QWEN_GC).params()
    assert (ours.processing, ours.repetition_penalty) == ("ours", 1.0)
    rating = rating_sampling(ProbeSettings(rating_sampler="generation_config"), QWEN_GC).params()
    assert rating.processing == "paper" and rating.repetition_penalty == 1.05


# ------------------------------------------------------------------------ row 4


def test_seq_continuation_scores_the_original_option_text(data_dir):
    bank = {q.id: q for q in load_question_bank(data_dir)}
    for qid in ("Q43", "Q44", "Q45"):
        p = P.build_prompt(bank[qid], "default", "baseline")
        assert p.option_texts_displayed[1] == "Don't mind"  # the prompt: ASCII
        assert "B. Don't mind" in p.messages[1]["content"]
        conts = P.option_continuations(p, None, instruct=False)
        assert conts[1] == "\nB. Don\u2019t mind"  # the continuation: the original text
    p110 = P.build_prompt(bank["Q110"], "prefixed", "num")
    j = p110.display_order.index(9)
    original = bank["Q110"].options[9]
    assert not original.isascii() and p110.option_texts_displayed[j].isascii()
    assert P.option_continuations(p110, None, instruct=False)[j] == " 9. " + original
    assert p110.messages[1]["content"].isascii()


def _tiny_tokenizer(chat_template=None):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, "<unk>")),
                                  unk_token="<unk>", eos_token="<unk>")
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")

Q_UNI = Question("Q44", "How about this?", ("Like", "Don\u2019t mind", "Dislike"), 44)


def test_seq_continuation_with_a_chat_template_keeps_the_original_text():
    tok = _tiny_tokenizer(CHATML)
    p = P.build_prompt(Q_UNI, "default", "reverse")
    head = P.render(p, tok, instruct=True, system_role=True)
    assert "B. Don't mind" in head and head.isascii()
    assert P.option_continuations(p, tok, instruct=True, system_role=True) == [
        "C. Like<|im_end|>\n", "B. Don\u2019t mind<|im_end|>\n", "A. Dislike<|im_end|>\n"]


# ------------------------------------------------------------------------ rows 6 and 7


def _model(name, tok):
    return types.SimpleNamespace(name=name, spec=get_spec(name), tokenizer=tok)


def test_falcon_instruct_uses_its_chat_template_when_it_has_one():
    assert get_spec("falcon-7b-instruct").use_chat_template is None
    assert uses_chat_template(_model("falcon-7b-instruct", _tiny_tokenizer(CHATML)))
    assert not uses_chat_template(_model("falcon-7b-instruct", _tiny_tokenizer()))
    # with one: rendered by the template (system role detected: kept as its own turn)
    spec = get_spec("falcon-7b-instruct")
    p = P.build_prompt(Q_UNI, "default", "baseline")
    text = P.render(p, _tiny_tokenizer(CHATML), instruct=True, system_role=spec.system_role)
    assert text.startswith("<|im_start|>system\nInstruction:")
    # without: the plain-text path, each answer closed by its EOS text
    assert P.option_continuations(p, None, instruct=False, end_of_turn=spec.end_of_turn)[0] == \
        "\nA. Like<|endoftext|>"
    # a registered chat model without a template is still an error
    with pytest.raises(InputError, match="no chat template"):
        uses_chat_template(_model("qwen2.5-7b-instruct", _tiny_tokenizer()))


def test_bloomz_answer_has_no_end_token():
    spec = get_spec("bloomz-7b1")
    assert spec.end_of_turn is None and spec.use_chat_template is False
    assert not uses_chat_template(_model("bloomz-7b1", _tiny_tokenizer(CHATML)))
    p = P.build_prompt(Q_UNI, "default", "baseline")
    assert P.option_continuations(p, None, instruct=False, end_of_turn=spec.end_of_turn) == [
        "\nA. Like", "\nB. Don\u2019t mind", "\nC. Dislike"]
    prefixed = P.build_prompt(Q_UNI, "prefixed", "baseline")
    assert P.option_continuations(prefixed, None, instruct=False,
                                  end_of_turn=spec.end_of_turn)[2] == " C. Dislike"


# ------------------------------------------------------------------------ pinned dates

# Llama-3.2's date logic (strftime_now) and Llama-3.1's (date_string, default "26 Jul 2024")
DATED = ("{%- if not date_string is defined %}{%- if strftime_now is defined %}"
         "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}"
         "{%- set date_string = '26 Jul 2024' %}{%- endif %}{%- endif %}"
         "{{ 'Today Date: ' + date_string + ' / ' + strftime_now('%Y-%m-%d') + '\n' }}" + CHATML)


def test_chat_template_kwargs_pin_both_date_sources():
    tok = _tiny_tokenizer(DATED)
    p = P.build_prompt(Q_UNI, "default", "baseline")
    text = P.render(p, tok, instruct=True, system_role=True, date_string="2026-12-06")
    assert text.startswith("Today Date: 06 Dec 2026 / 2026-12-06\n<|im_start|>system\n")
    with pytest.raises(InputError, match="expected YYYY-MM-DD"):
        P.chat_template_kwargs(tok, "6 Dec 2026")
    assert P.chat_template_kwargs(tok, "") == {}
    # Llama-3.1's form (date_string only, no clock): pinned too, and the template kept as is
    plain = _tiny_tokenizer("{{ 'Today Date: ' + date_string + '\n' }}" + CHATML)
    assert P.chat_template_kwargs(plain, "2024-07-26") == {"date_string": "26 Jul 2024"}
    assert P.render(p, plain, instruct=True, system_role=True, date_string="2026-01-02"
                    ).startswith("Today Date: 02 Jan 2026\n")


def test_resumed_sweep_on_another_day_pins_the_first_day(tmp_path, monkeypatch):
    tok = _tiny_tokenizer(DATED)
    prompt = P.build_prompt(Q_UNI, "default", "baseline")
    work = tmp_path / "work"

    def day(iso):
        monkeypatch.setattr(P, "today", lambda: iso)
        config = load_config(f"{ROB}:{M}")
        with sweep.open_workdir(work) as wd:
            pinned = sweep.pin_date_string(wd, config)
            sweep.check_manifest(wd, config, 1)
        settings = ProbeSettings.from_config(config)
        return pinned, settings, P.render(prompt, tok, instruct=True, system_role=True,
                                          date_string=settings.date_string)

    d1, s1, text1 = day("2026-12-06")
    d2, s2, text2 = day("2026-12-07")
    assert d1 == d2 == s1.date_string == s2.date_string == "2026-12-06"
    assert text1 == text2 and "Today Date: 06 Dec 2026 / 2026-12-06" in text1
    assert json.loads((work / "manifest.json").read_text())["date_string"] == "2026-12-06"
    # an explicit, different date on resume is refused; the same one is fine
    config = load_config(f"{ROB}:{M}", ["--config.probe.date_string=2026-12-07"])
    with pytest.raises(InputError, match="run pinned probe.date_string=2026-12-06"):
        sweep.pin_date_string(store.Workdir(work, lock_index=None), config)
    same = load_config(f"{ROB}:{M}", ["--config.probe.date_string=2026-12-06"])
    assert sweep.pin_date_string(store.Workdir(work, lock_index=None), same) == "2026-12-06"
    # a fresh workdir on day 2 pins day 2
    monkeypatch.setattr(P, "today", lambda: "2026-12-07")
    fresh = load_config(f"{ROB}:{M}")
    assert sweep.pin_date_string(store.Workdir(tmp_path / "w2", lock_index=None), fresh) == "2026-12-07"


def test_rows_carry_the_pinned_date(tmp_path, monkeypatch):
    """The rows a day-1 run and a day-2 resume write: same prompts, same date column."""
    from valueprobe_jax.experiments import results
    from valueprobe_jax.probing import engine as E

    tok = _tiny_tokenizer(DATED)
    seen: dict[str, list[str]] = {}

    class FakeEngine(E.ProbeEngine):
        def __init__(self, settings):  # no model: render and the row assembly only
            self.settings, self.instruct, self.system_role, self.end_of_turn = settings, True, True, None
            self.model = types.SimpleNamespace(tokenizer=tok, name="fake")

    def process(settings):
        eng = FakeEngine(settings)

        def chunk(items):
            rows = []
            for it in items:
                p = P.build_prompt(Q_UNI, it.style, it.variant, it.country)
                text, _ = eng.render(p)
                seen.setdefault(it.key, []).append(text)
                rows.append({"key": it.key, "qid": it.qid, "date_string": settings.date_string})
            return rows
        return chunk

    def run(iso):
        monkeypatch.setattr(P, "today", lambda: iso)
        config = load_config(f"{ROB}:{M}", ["--config.probe.variants=baseline",
                                            "--config.run.chunk_size=1"])
        items = sweep.expand_probe_items(config, ["Q44"])
        with sweep.open_workdir(tmp_path / "w") as wd:
            sweep.pin_date_string(wd, config)
            sweep.run_chunks(wd, config, items, process(ProbeSettings.from_config(config)),
                             progress=False)
        return items

    items = run("2026-12-06")
    (tmp_path / "w" / "shards" / "chunk-000001.parquet").unlink()  # lost: recomputed on resume
    run("2026-12-07")
    rows = results.read_results(tmp_path / "w" / "shards").to_pylist()
    assert sorted(r["key"] for r in rows) == sorted(it.key for it in items)
    assert {r["date_string"] for r in rows} == {"2026-12-06"}
    redone = items[1].key
    assert len(seen[redone]) == 2 and seen[redone][0] == seen[redone][1]
    assert "Today Date: 06 Dec 2026" in seen[redone][1]
