"""End to end on the real SmolLM2-135M-Instruct: a small robustness sweep (5 questions x 3 styles x
5 variants, text method included), a small action-rating sweep, and the report built from them."""

from __future__ import annotations

import pathlib

import matplotlib.image as mpimg
import numpy as np
import pytest

from valueprobe_jax.probing import representations
from valueprobe_jax.experiments import results
from valueprobe_jax.cli import main
from valueprobe_jax.experiments.config_loading import load_config
from valueprobe_jax.experiments.runner import run_config

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = 3


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("e2e")
    rob = load_config(f"{REPO / 'configs/robustness.py'}:smollm2-135m-instruct",
                      ["max_questions=5", f"probe.samples={SAMPLES}", "probe.max_new_tokens=16",
                       f"input.data_dir={data_dir}"])
    act = load_config(f"{REPO / 'configs/action_agreement.py'}:smollm2-135m-instruct",
                      ["max_questions=3", "actions.max_scenarios=2", f"probe.samples={SAMPLES}",
                       "probe.max_new_tokens=16", "actions.max_new_tokens=8",
                       f"input.data_dir={data_dir}"])
    run_config(rob, root / "robustness", progress=False)
    run_config(act, root / "actions", progress=False)
    return root


def test_robustness_sweep_rows(sweeps):
    rows = results.read_results(sweeps / "robustness").to_pylist()
    assert len(rows) == 5 * 3 * 5
    assert {(r["style"], r["variant"]) for r in rows} == {
        (s, v) for s in ("default", "prefixed", "one_shot")
        for v in ("baseline", "reverse", "num", "lower", "shuffle")}
    for r in rows:
        k = len(r["labels"])
        for col in ("p_token", "p_seq", "p_text"):
            assert len(r[col]) == k and abs(sum(r[col]) - 1) < 1e-9
        assert len(r["generations"]) == SAMPLES
        # stored distributions are the raw numbers mapped back to canonical order
        np.testing.assert_allclose(r["p_token"], representations.p_token(
            r["token_logits"], r["token_logits_space"], r["display_order"]), atol=1e-12)
        np.testing.assert_allclose(r["p_seq"], representations.p_seq(
            r["option_logprob"], r["option_ntokens"], r["display_order"]), atol=1e-12)
    reverse = next(r for r in rows if r["variant"] == "reverse" and r["qid"] == "Q1")
    assert reverse["labels"] == ["D", "C", "B", "A"] and reverse["display_order"] == [0, 1, 2, 3]


def test_action_sweep_rows(sweeps):
    rows = results.read_results(sweeps / "actions").to_pylist()
    ratings = [r for r in rows if r["scenario_id"] is not None]
    probes = [r for r in rows if r["scenario_id"] is None]
    assert len(probes) == 3 * 3  # questions x styles (baseline variant)
    n_scen = len({(r["qid"], r["scenario_id"]) for r in ratings})
    assert 1 <= n_scen <= 3 * 2
    assert len(ratings) == n_scen * 3 * 2  # rating templates x actions
    for r in ratings:
        assert 1.0 <= r["rating_expected"] <= 10.0
        assert abs(sum(r["rating_probs"]) - 1) < 1e-9
        assert r["rating_expected"] == pytest.approx(float(np.dot(np.arange(1, 11), r["rating_probs"])))


def test_report_from_the_real_sweeps(sweeps, capsys):
    out = sweeps / "report"
    assert main(["report", str(sweeps), "--out", str(out), "--bootstrap", "50"]) == 0
    figures = sorted((out / "figures").glob("*"))
    assert len([f for f in figures if f.suffix == ".png"]) >= 4
    assert len([f for f in figures if f.suffix == ".pdf"]) >= 4
    for f in figures:
        head = f.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if f.suffix == ".png" else b"%PDF"), f
        if f.suffix == ".png":
            img = mpimg.imread(f)
            assert img.size > 0 and img.std() > 0  # not a blank canvas
    report = (out / "report.md").read_text()
    for name in ("smollm2-135m-instruct", "token", "seq", "text", "mismatch", "JS distance",
                 "prompt robustness", "selection bias", "alignment", "value-action", "noise floor"):
        assert name.lower() in report.lower(), name
