"""The paper's published numbers (analysis/paper_tables.py) and Table 3's section counts against
the question bank's questionnaire ranges and the released value-action file's Section field."""

import pathlib

import pytest

from valueprobe_jax.analysis import paper_tables as PT
from valueprobe_jax.analysis.report import human_from_wvs
from valueprobe_jax.data.questions import SECTIONS, load_question_bank, section_counts, section_of


@pytest.fixture(scope="module")
def mirror():
    for d in (pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data",
              pathlib.Path("/work/shared/data")):
        if (d / "paper_repo" / "input_dict.json").is_file():
            return d
    pytest.skip("no paper data mirror")


def test_published_numbers_are_consistent():
    assert sum(PT.TABLE3_PRINTED.values()) == PT.TABLE3_TOTAL == 206
    assert set(PT.TABLE3_PRINTED) == {n for n, *_ in SECTIONS}
    assert set(PT.TABLE2) == {"token", "seq", "text"}
    assert PT.TABLE2["text"]["mismatch"] == (0.933, 3.372e-6)
    assert "Czech" not in PT.RELEASE_COUNTRIES and len(PT.RELEASE_COUNTRIES) == 5
    assert [m for m in ("Qwen2.5-7B-Instruct", "bloomz-7b1", "falcon-7b-instruct", "Llama-3.1-8B")
            if PT.is_release_instruct(m)] == ["Qwen2.5-7B-Instruct", "falcon-7b-instruct"]


def test_table3_counts_equal_the_questionnaire_ranges(mirror):
    bank = load_question_bank(mirror, download=False)
    ours = PT.section_count_table([q.id for q in bank])
    assert {n: c for n, c in ours.items() if c} == section_counts(bank)
    # the questionnaire's ranges, counted directly on the question numbers
    for number, _, first, last in SECTIONS:
        assert ours[number] == sum(first <= int(q.id[1:].rstrip("AB")) <= last for q in bank)
    differs = {n: (ours[n], PT.TABLE3_PRINTED[n]) for n in ours if ours[n] != PT.TABLE3_PRINTED[n]}
    assert differs == {10: (6, 7), 11: (23, 22)}  # the printed table's one-question difference
    assert sum(ours.values()) == 206


def test_table3_counts_equal_the_released_section_field(mirror):
    bank = load_question_bank(mirror, download=False)
    field = PT.released_section_field(bank, mirror)
    assert len(field) == 203  # the released file covers 203 of the 206 questions
    assert sorted(q.id for q in bank if q.id not in field) == ["Q189", "Q49", "Q89"]
    assert all(field[q] == section_of(q) for q in field)  # agrees question by question
    assert field["Q176"] == 11
    by_field = PT.section_count_table([])
    for q, s in field.items():
        by_field[s] += 1
    assert (by_field[10], by_field[11]) == (6, 22)  # + the uncovered Q189 (Section 11) = 23
    assert section_of("Q189") == 11


def test_human_from_wvs_unweighted(tmp_path, mirror):
    csv = tmp_path / "wvs.csv"
    csv.write_text("B_COUNTRY_ALPHA,W_WEIGHT,Q1,Q94\n"
                   "EGY,1.0,1,0\nEGY,2.0,2,2\nEGY,1.0,-1,1\nDEU,1.0,4,-2\n")
    human = human_from_wvs(csv, ["Egypt"], mirror, weighted=False)
    assert human[("Egypt", "Q1")].tolist() == pytest.approx([0.5, 0.5, 0, 0])  # raw counts
    assert human[("Egypt", "Q94")].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3])
