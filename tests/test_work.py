"""The one style x variant x country x question expansion: its order (chunks are cut from it, so
stored numbers depend on it) and that the sweep's work items and the probe requests follow it."""

from __future__ import annotations

import pathlib

from valueprobe_jax.data.questions import Question
from valueprobe_jax.experiments import sweep
from valueprobe_jax.experiments.config_loading import load_config
from valueprobe_jax.probing.engine import build_probe_requests
from valueprobe_jax.probing.work import probe_cells, probe_countries

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_cells_are_style_major_with_stable_keys():
    cells = probe_cells("demo", "m", ["default", "one_shot"], ["baseline", "shuffle"],
                        [None, "Egypt"], ["Q1", "Q2"])
    want = [(s, v, c, q) for s in ("default", "one_shot") for v in ("baseline", "shuffle")
            for c in (None, "Egypt") for q in ("Q1", "Q2")]
    assert [(x.style, x.variant, x.country, x.qid) for x in cells] == want
    assert cells[0].key == "demo|m|default|baseline|-|Q1"
    assert cells[-1].key == "demo|m|one_shot|shuffle|Egypt|Q2"


def test_countries_put_no_country_first():
    assert probe_countries(["Egypt", "China"], True) == [None, "Egypt", "China"]
    assert probe_countries(["Egypt"], False) == ["Egypt"]
    assert probe_countries([], False) == []


def test_sweep_items_and_probe_requests_share_the_expansion():
    c = load_config(str(REPO / "configs/demographic.py") + ":smollm2-135m-instruct,runlocal")
    questions = [Question(f"Q{i}", f"Question {i}?", ("Yes", "No", "Maybe")) for i in (3, 1, 2)]
    items = sweep.expand_probe_items(c, [q.id for q in questions])
    countries = probe_countries(c.probe.countries, c.probe.include_no_country)
    requests = build_probe_requests(questions, c.probe.styles, c.probe.variants, countries,
                                    experiment=c.experiment, model_name=c.model.name,
                                    shuffle_seed=c.probe.shuffle_seed)
    assert len(items) == len(requests) == (len(c.probe.styles) * len(c.probe.variants)
                                           * len(countries) * len(questions))
    assert [it.key for it in items] == [r.key for r in requests]
    for it, r in zip(items, requests, strict=True):
        p = r.prompt
        assert (it.style, it.variant, it.country, it.qid) == (p.style, p.variant, p.country, p.qid)
