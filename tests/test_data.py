"""Data: the question bank and its sections, the value-action scenarios and their verdicts, WVS-7
human distributions from a synthetic respondent CSV, the TFDS builders, pinned sources."""

import importlib.util
import io
import json
import re
import shutil

import numpy as np
import pytest

from valueprobe_jax.data import questions as Qs
from valueprobe_jax.data import scenarios as S
from valueprobe_jax.data import sources
from valueprobe_jax.data.transliterate import to_ascii
from valueprobe_jax.data.wvs_human import code_offset, country_code, human_distributions
from valueprobe_jax.errors import InputError


def one_line_error(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg


# ------------------------------------------------------------------------------ question bank

def test_question_bank_equals_mirror_json(data_dir):
    bank = Qs.load_question_bank(data_dir)
    assert len(bank) == 206
    with open(data_dir / "wvs7_questions.json", encoding="utf-8") as f:
        assert [q.to_json() for q in bank] == json.load(f)
    ids = [q.id for q in bank]
    assert ids[:3] == ["Q1", "Q2", "Q3"] and ids[-1] == "Q253" and "Q234A" in ids


def test_question_bank_keeps_source_quirks(data_dir):
    bank = {q.id: q for q in Qs.load_question_bank(data_dir)}
    assert bank["Q201"].options[2] == "Monly"
    assert bank["Q48"].options[8] == "9.0"
    assert "  jobs are scarce" in bank["Q34"].question
    assert bank["Q45"].options[1] == "Don\u2019t mind"


def _norm(text):
    """Independent matching key for the cross-check: lowercase letters and digits only, with the
    typographic quotes and dashes of the scenario file dropped."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def test_table3_section_counts(data_dir):
    """Questions per WVS-7 thematic section in the 206-question bank (the paper's Table 3).

    The expected counts are NOT copied from the paper's Table 3 (../shared/PAPER_FACTS.md holds it:
    it prints 7 / 22 for sections 10 / 11, one question off the paper's own released data;
    analysis/paper_tables.py shows both). They are derived twice: (1) from the WVS-7 questionnaire's question-number ranges (`section_of`), and
    (2) independently from the paper authors' own `Section` column in the released scenario file,
    matching question texts by a different normalisation; 203 of the 206 questions appear there,
    the other three are assigned by hand from the questionnaire (Q49 shares Q50's text in the
    source: section 2; Q89 confidence in the WTO: section 3; Q189 a man beating his wife: 11).
    Section 8 (Postmaterialist Index, Q152-Q157) has no question in the bank.
    """
    expected = {1: 24, 2: 10, 3: 45, 4: 5, 5: 9, 6: 10, 7: 13, 9: 6, 10: 6, 11: 23, 12: 36,
                13: 19}
    bank = Qs.load_question_bank(data_dir)
    assert Qs.section_counts(bank) == expected
    assert sum(expected.values()) == 206

    path = data_dir / "paper_repo" / "action_agreement" / "value_tasks_verified_parsed.json"
    section_by_text = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            section_by_text[_norm(rec["Value"].split("\n")[0])] = rec["Section"]
    by_hand = {"Q49": 2, "Q89": 3, "Q189": 11}
    counts: dict[int, int] = {}
    for q in bank:
        section = section_by_text.get(_norm(q.question), by_hand.get(q.id))
        assert section is not None, q.id
        assert section == q.section, q.id
        counts[section] = counts.get(section, 0) + 1
    assert dict(sorted(counts.items())) == expected
    assert [q.id for q in bank if _norm(q.question) not in section_by_text] == ["Q89", "Q189"]


def test_section_of():
    assert Qs.section_of("Q1") == 1 and Qs.section_of("Q45") == 1 and Qs.section_of("Q46") == 2
    assert Qs.section_of("Q234A") == 12 and Qs.section_of("Q235") == 13
    assert Qs.section_of("Q259") == 13 and Qs.section_of("Q260") is None
    assert Qs.section_of("my_question") is None
    assert Qs.SECTION_NAMES[13] == "Political Culture & Political Regimes"


def test_user_questions_file(tmp_path):
    path = tmp_path / "qs.json"
    path.write_text(json.dumps([{"id": "Q27", "question": "Proud?", "options": ["Yes", "No"]},
                                {"id": "mine", "question": "Tea?", "options": ["a", "b", "c"]}]))
    qs = Qs.load_questions_file(path)
    assert [(q.id, q.options, q.section) for q in qs] == [("Q27", ("Yes", "No"), 1),
                                                          ("mine", ("a", "b", "c"), None)]


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ('{"id": "Q1"}', "non-empty JSON list"),
    ("[]", "non-empty JSON list"),
    ('[{"id": "Q1", "question": "x"}]', "question #0: missing options"),
    ('[{"id": "Q1", "question": "x", "options": "ab"}]', "question Q1: options must be a list"),
    ('[{"id": "Q1", "question": "", "options": ["a", "b"]}]', "question Q1: question must be"),
    ('[{"id": 5, "question": "x", "options": ["a", "b"]}]', "question #0: id must be"),
    ('[{"id": "Q1", "question": "x", "options": ["a", "b"]},'
     ' {"id": "Q1", "question": "y", "options": ["a", "b"]}]', "question Q1: duplicate id"),
    (json.dumps([{"id": "Q9", "question": "x", "options": [str(i) for i in range(11)]}]),
     "question Q9: 11 options, more than the 10 labels"),
])
def test_malformed_questions_file(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError) as e:
        Qs.load_questions_file(path)
    one_line_error(e, str(path), needle)


def test_missing_questions_file(tmp_path):
    with pytest.raises(InputError) as e:
        Qs.load_questions_file(tmp_path / "nope.json")
    one_line_error(e, "no such file")


def test_transliteration():
    assert to_ascii("Don\u2019t \u201cgo\u201d \u2014 wait\u2026 caf\u00e9\u00a0na\u00efve") == \
        "Don't \"go\" -- wait... cafe naive"
    assert to_ascii("plain") == "plain"
    assert to_ascii("Stra\u00dfe \u2013 \u4e2d") == "Strasse - "


# ------------------------------------------------------------------------------ scenarios

@pytest.mark.parametrize("text, expected", [
    ('{"Q1": "Yes", "Q2": "Yes", "Q3": "Yes", "Q4": "Yes"}', dict(Q1=True, Q2=True, Q3=True, Q4=True)),
    ('{"Q1": Yes, "Q2": Yes, "Q3": No, "Q4": Yes,}', dict(Q1=True, Q2=True, Q3=False, Q4=True)),
    ('{ ""Q1"": "Yes", ""Q2"": "No", ""Q3"": "Yes", ""Q4"": "Yes" }',
     dict(Q1=True, Q2=False, Q3=True, Q4=True)),
    ("{Q1: yes,\n  Q2 : YES ,Q3:'no', q4:\"Yes\"}", dict(Q1=True, Q2=True, Q3=False, Q4=True)),
    ('{"Q1": true, "Q2": false}', dict(Q1=True, Q2=False)),
    ('Sure! ```json\n{"Q1": "Yes", "Q2": "Yes"}\n``` Hope this helps.', dict(Q1=True, Q2=True)),
    ('{"Q10": "Yes", "Q1": "No"}', dict(Q10=True, Q1=False)),
    ('{"Q1": "Yes", "Q1": "No"}', None),          # contradicting verdicts
    ('{"Q1": "Maybe"}', None),
    ("I cannot judge this scenario.", None),
    ("", None),
    (None, None),
])
def test_parse_verdict(text, expected):
    assert S.parse_verdict(text) == expected


def test_verdict_status():
    assert S.verdict_status('{"Q1": Yes, "Q2": Yes, "Q3": Yes, "Q4": Yes,}') == "kept"
    assert S.verdict_status('{"Q1": Yes, "Q2": Yes, "Q3": Yes}') == S.MISSING_KEYS
    assert S.verdict_status('{"Q1": Yes, "Q2": No, "Q3": Yes, "Q4": Yes}') == S.NOT_ALL_YES
    assert S.verdict_status("no idea") == S.UNPARSEABLE


def test_released_file_hand_count(data_dir):
    """Four-Yes rows counted independently: squeeze each verdict to letters, digits, ':' and ','
    and compare with the one all-Yes form. 2186 = 843 + 787 + 225 + 136 + 125 + 64 + 6, the
    counts of the seven distinct all-Yes spellings in the file."""
    path = data_dir / "paper_repo" / "action_agreement" / "value_tasks_verified_parsed.json"
    hand = 0
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for line in lines:
        squeezed = re.sub(r"[^A-Za-z0-9:,]", "", json.loads(line)["Verification"]).rstrip(",")
        hand += squeezed == "Q1:Yes,Q2:Yes,Q3:Yes,Q4:Yes"
    assert len(lines) == 2750 and hand == 2186

    kept, report = S.load_scenarios(data_dir)
    assert len(kept) == report.kept == hand
    assert report.total == 2750 and report.dropped == {S.NOT_ALL_YES: 564}
    assert report.kept_matched == 1682 and len(report.unmatched_questions) == 27
    assert report.section_mismatches == 0
    assert list(report.ambiguous_texts.values()) == [["Q49", "Q50"]]
    first = kept[0]
    assert (first.row, first.qid, first.section) == (0, "Q1", 1)
    assert (first.answer_a, first.answer_b) == ("Very important", "Not at all important")
    chosen = S.select_for_rating(kept)
    per_q = {}
    for s in chosen:
        per_q[s.qid] = per_q.get(s.qid, 0) + 1
    assert len(per_q) == 203 and max(per_q.values()) == 10 and len(chosen) == 1681
    grouped = S.scenarios_by_qid(kept)
    assert [s.id for group in grouped.values() for s in group] == [s.id for s in chosen]
    assert len(S.scenarios_by_qid(kept, None)["Q50"]) == 11 and kept[0].id == "r0"


def test_scenarios_messy_file(tmp_path, data_dir):
    value = ("Indicate how important family is in your life. Would you say it is:\n"
             "Person A: Very important\nPerson B: Not at all important\n")
    base = {"Value": value, "Situation": "s", "ActionA": "a", "ActionB": "b", "Section": 1}
    rows = [
        dict(base, Verification='{"Q1": Yes, "Q2": Yes, "Q3": Yes, "Q4": Yes,}'),
        dict(base, Verification='{"Q1": Yes, "Q2": Yes, "Q3": Yes}'),
        dict(base, Verification="no verdict here"),
        dict(base, Verification='{"Q1": "No", "Q2": "Yes", "Q3": "Yes", "Q4": "Yes"}'),
        dict(base, Value="A question without the two persons", Verification='{"Q1": "Yes"}'),
        dict(base, Value="Unknown question?\nPerson A: x\nPerson B: y\n",
             Verification='{ ""Q1"": "Yes", ""Q2"": "Yes", ""Q3"": "Yes", ""Q4"": "Yes" }'),
        {"Value": value},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken json\n\n")
    kept, report = S.load_scenarios(data_dir, path=path)
    assert [s.qid for s in kept] == ["Q1", None]
    assert report.total == 8 and report.kept == 2 and report.kept_matched == 1
    assert report.dropped == {S.MISSING_KEYS: 1, S.UNPARSEABLE: 1, S.NOT_ALL_YES: 1,
                              S.BAD_VALUE: 1, S.BAD_ROW: 2}
    assert report.unmatched_questions == ["Unknown question?"]
    assert report.lines()[0] == "8 rows: 2 kept (all four verdicts Yes), 6 dropped"


# ------------------------------------------------------------------------------ WVS-7 human

CSV_ROWS = [  # B_COUNTRY_ALPHA, W_WEIGHT, A_YEAR, Q1 (4 options), Q94 (3, coded from 0), Q164 (10)
    ("DEU", 1.5, 2018, 1, 0, 10),
    ("DEU", 0.5, 2018, 2, 2, -1),
    ("DEU", 1.0, 2018, -2, 1, 1),
    ("DEU", 2.0, 2018, 2, -5, 11),   # Q164 code 11: out of range
    ("USA", 0.8, 2017, 4, 3, 5),     # Q94 code 3: out of range
    ("USA", 1.2, 2017, 3, 0, 5),
    ("EGY", 1.0, 2018, -4, -4, -4),
]
BANK = [Qs.Question("Q1", "family", ("VI", "RI", "NVI", "NAI"), 1),
        Qs.Question("Q94", "church", ("Don't belong", "Inactive", "Active"), 3),
        Qs.Question("Q164", "God", tuple(str(i) for i in range(1, 11)), 10),
        Qs.Question("Q2", "friends", ("VI", "RI", "NVI", "NAI"), 1)]  # not in the file


def write_csv(path, sep=","):
    head = sep.join(f'"{c}"' for c in ("B_COUNTRY_ALPHA", "W_WEIGHT", "A_YEAR", "Q1", "Q94", "Q164"))
    body = "\n".join(sep.join([f'"{r[0]}"'] + [str(x) for x in r[1:]]) for r in CSV_ROWS)
    path.write_text(head + "\n" + body + "\n")
    return path


@pytest.mark.parametrize("sep", [",", ";"])
def test_human_distributions_hand_computed(tmp_path, sep):
    h = human_distributions(write_csv(tmp_path / "wvs.csv", sep), BANK)
    # DEU Q1: weights 1.5 on option 0, 0.5 + 2.0 on option 1 (the -2 row is missing).
    np.testing.assert_allclose(h.dist["DEU"]["Q1"], [1.5 / 4, 2.5 / 4, 0, 0])
    # DEU Q94 is coded from 0: code 0 -> option 0 (1.5), 1 -> option 1 (1.0), 2 -> option 2 (0.5).
    np.testing.assert_allclose(h.dist["DEU"]["Q94"], [1.5 / 3, 1.0 / 3, 0.5 / 3])
    # DEU Q164: code 10 -> option 9 (1.5), code 1 -> option 0 (1.0); -1 missing, 11 out of range.
    np.testing.assert_allclose(h.dist["DEU"]["Q164"], [0.4] + [0] * 8 + [0.6])
    assert h.n_valid["DEU"] == {"Q1": 3, "Q94": 3, "Q164": 2}
    assert h.n_out_of_range["DEU"]["Q164"] == 1
    np.testing.assert_allclose(h.dist["USA"]["Q1"], [0, 0, 0.6, 0.4])
    np.testing.assert_allclose(h.dist["USA"]["Q94"], [1, 0, 0])
    assert h.n_out_of_range["USA"]["Q94"] == 1
    np.testing.assert_allclose(h.dist["USA"]["Q164"], [0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    assert h.dist["EGY"] == {} and h.n_valid["EGY"]["Q1"] == 0
    assert h.missing_columns == ["Q2"]
    np.testing.assert_allclose(h.get("Germany", "Q1"), h.dist["DEU"]["Q1"])


def test_human_country_selection_and_codes(tmp_path):
    h = human_distributions(write_csv(tmp_path / "wvs.csv"), BANK, countries=["United States", "Czech"])
    assert sorted(h.dist) == ["CZE", "USA"] and h.dist["CZE"] == {}
    assert [country_code(c) for c in ("United States", "Germany", "Czech", "China", "Mexico",
                                      "Egypt")] == ["USA", "DEU", "CZE", "CHN", "MEX", "EGY"]
    assert country_code("czech republic") == "CZE" and country_code("NLD") == "NLD"
    assert code_offset("Q94") == 0 and code_offset("Q119") == 0 and code_offset("Q129") == 0
    assert code_offset("Q121") == 1 and code_offset("Q130") == 1 and code_offset("Q1") == 1


def test_human_bad_inputs(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("B_COUNTRY_ALPHA,Q1\nDEU,1\n")
    with pytest.raises(InputError) as e:
        human_distributions(bad, BANK)
    one_line_error(e, str(bad), "no W_WEIGHT column")
    with pytest.raises(InputError) as e:
        human_distributions(tmp_path / "absent.csv", BANK)
    one_line_error(e, "no such file")
    with pytest.raises(InputError) as e:
        country_code("Atlantis")
    one_line_error(e, "Atlantis")
    with pytest.raises(InputError):
        country_code("")


# ------------------------------------------------------------------------------ TFDS builders

def test_tfds_builders_prepare_and_read_back(tmp_path, data_dir):
    import tensorflow_datasets as tfds

    from valueprobe_jax.data import tfds_builders as tb

    assert importlib.util.find_spec("tensorflow") is None  # runs without TensorFlow
    out = tmp_path / "tfds"
    manual = tmp_path / "manual"
    manual.mkdir()
    write_csv(manual / "WVS_Cross-National_Wave_7_csv_test.csv")
    tb.prepare("wvs7_questions", out, source_dir=data_dir)
    tb.prepare("value_action_scenarios", out, source_dir=data_dir)
    tb.prepare("wvs7_human", out, source_dir=data_dir, manual_dir=manual)
    assert list((out / "wvs7_questions" / "1.0.0").glob("*.array_record-*"))

    assert tb.read_questions(out) == Qs.load_question_bank(data_dir)
    kept, report = S.load_scenarios(data_dir)
    assert tb.read_scenarios(out) == kept
    assert tb.scenario_report(out)["kept"] == 2186
    human = tb.read_human(out)
    assert sorted(human) == ["DEU", "USA"]  # EGY has no valid answer to any bank question
    np.testing.assert_allclose(human["DEU"]["Q1"], [0.375, 0.625, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(human["DEU"]["Q94"], [0.5, 1 / 3, 1 / 6], rtol=1e-6)

    # Hosts that do not import our builders can read the prepared copy by directory.
    ds = tfds.builder_from_directory(str(out / "wvs7_questions" / "1.0.0")).as_data_source(split="train")
    assert len(ds) == 206 and ds[0]["id"] == b"Q1" and ds[205]["id"] == b"Q253"

    with pytest.raises(InputError) as e:
        tb.prepare("wvs7_human", tmp_path / "tfds2", source_dir=data_dir, manual_dir=tmp_path / "empty")
    one_line_error(e, "expected exactly one WVS-7 .csv file")
    with pytest.raises(InputError):
        tb.prepare("nope", out)
    with pytest.raises(InputError) as e:
        tb.read_human(tmp_path / "tfds3")
    one_line_error(e, "wvs7_human is not prepared")


# ------------------------------------------------------------------------------ pinned sources

def test_mirror_checksums_and_errors(tmp_path, data_dir, monkeypatch):
    assert sources.source_file(sources.INPUT_DICT, data_dir) == data_dir / "paper_repo" / "input_dict.json"
    fake = tmp_path / "mirror" / "paper_repo"
    fake.mkdir(parents=True)
    (fake / "input_dict.json").write_text("{}")
    with pytest.raises(InputError) as e:
        Qs.load_question_bank(tmp_path / "mirror")
    one_line_error(e, "sha256", "does not match")
    with pytest.raises(InputError) as e:
        sources.source_file("templates/template0.json", tmp_path / "mirror")
    one_line_error(e, "missing from the data directory")
    with pytest.raises(InputError) as e:
        sources.source_file("secret.json", data_dir)
    one_line_error(e, "not one of the paper's pinned data files")
    with pytest.raises(InputError) as e:
        sources.source_file(sources.INPUT_DICT, tmp_path / "nowhere")
    one_line_error(e, "does not exist")


def test_no_mirror_no_download(tmp_path, monkeypatch):
    monkeypatch.delenv("VALUEPROBE_DATA_DIR", raising=False)
    monkeypatch.setenv("VALUEPROBE_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("tests must not download")

    monkeypatch.setattr(sources.urllib.request, "urlopen", no_network)
    with pytest.raises(InputError) as e:
        sources.source_file(sources.INPUT_DICT, download=False)
    one_line_error(e, "downloads are off")
    monkeypatch.setenv("VALUEPROBE_OFFLINE", "1")
    with pytest.raises(InputError):
        sources.source_file(sources.INPUT_DICT)


def test_download_path_is_checked_and_cached(tmp_path, data_dir, monkeypatch):
    """The download branch, with urlopen replaced by the mirror's bytes (no network)."""
    monkeypatch.delenv("VALUEPROBE_DATA_DIR", raising=False)
    monkeypatch.delenv("VALUEPROBE_OFFLINE", raising=False)
    monkeypatch.setenv("VALUEPROBE_CACHE", str(tmp_path / "cache"))
    payload = {"bytes": (data_dir / "paper_repo" / "templates" / "template1.json").read_bytes()}
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        return io.BytesIO(payload["bytes"])

    monkeypatch.setattr(sources.urllib.request, "urlopen", fake_urlopen)
    path = sources.source_file("templates/template1.json")
    assert path.read_bytes() == payload["bytes"] and path.is_relative_to(tmp_path / "cache")
    assert urls == [f"https://raw.githubusercontent.com/{sources.REPO}/{sources.COMMIT}"
                    "/data/templates/template1.json"]
    assert sources.source_file("templates/template1.json") == path and len(urls) == 1  # cached
    payload["bytes"] = b"tampered"
    with pytest.raises(InputError) as e:
        sources.source_file("templates/template2.json")
    one_line_error(e, "sha256")
    assert not (path.parent / "template2.json").exists()
    shutil.rmtree(tmp_path / "cache")


def _paper_verdict_ok(text):
    """construct_inputs.get_action_agreement_input, written out independently."""
    try:
        verification = json.loads(text)
        return all(verification[k] == "Yes" for k in ("Q1", "Q2", "Q3", "Q4"))
    except Exception:
        return False


def test_strict_verdicts_keep_exactly_what_json_loads_accepts(data_dir):
    path = data_dir / "paper_repo" / "action_agreement" / "value_tasks_verified_parsed.json"
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    expected = [i for i, r in enumerate(rows) if _paper_verdict_ok(r["Verification"])]
    assert len(rows) == 2750 and len(expected) == 1630

    kept, report = S.load_scenarios(data_dir, verdicts="strict")
    assert [s.row for s in kept] == expected and report.kept == 1630
    assert report.dropped == {S.UNPARSEABLE: 753, S.NOT_ALL_YES: 367}
    chosen = S.select_for_rating(kept)  # bank match + the first 10 per question
    assert len(chosen) == 1248 and len({s.qid for s in chosen}) == 202
    lenient, _ = S.load_scenarios(data_dir)  # the default is unchanged
    assert len(lenient) == 2186 and {s.row for s in kept} <= {s.row for s in lenient}
    with pytest.raises(InputError) as e:
        S.load_scenarios(data_dir, verdicts="loose")
    one_line_error(e, "verdicts", "loose")


@pytest.mark.parametrize("reply,status", [
    ('{"Q1": "Yes", "Q2": "Yes", "Q3": "Yes", "Q4": "Yes"}', "kept"),
    ('{"Q1": Yes, "Q2": Yes, "Q3": Yes, "Q4": Yes}', S.UNPARSEABLE),          # not JSON
    ('{"Q1": "Yes", "Q2": "Yes", "Q3": "Yes", "Q4": "Yes",}', S.UNPARSEABLE),  # trailing comma
    ('{"Q1": "yes", "Q2": "Yes", "Q3": "Yes", "Q4": "Yes"}', S.NOT_ALL_YES),   # exact "Yes"
    ('{"Q1": true, "Q2": "Yes", "Q3": "Yes", "Q4": "Yes"}', S.NOT_ALL_YES),
    ('{"Q1": "Yes", "Q2": "Yes", "Q3": "Yes"}', S.MISSING_KEYS),
    ('["Yes"]', S.UNPARSEABLE), (None, S.UNPARSEABLE)])
def test_strict_verdict_status(reply, status):
    assert S.verdict_status(reply, verdicts="strict") == status
