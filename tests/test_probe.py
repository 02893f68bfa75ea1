"""The engine glue on SmolLM2: rows in canonical order, the "auto" strategy choice, and that the
strategy never changes the numbers."""

from __future__ import annotations

import numpy as np
import pytest

from valueprobe_jax.models.checkpoints import load_model
from valueprobe_jax.data.questions import load_question_bank
from valueprobe_jax.errors import InputError
from valueprobe_jax.probing.engine import ProbeEngine, ProbeSettings, build_probe_requests


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def requests(data_dir, smol):
    qs = load_question_bank(data_dir)[:2]
    return build_probe_requests(qs, ["default", "one_shot"], ["baseline", "shuffle"], [None],
                                experiment="probe", model_name=smol.name)


def test_settings_reject_bad_values():
    """A closed set's error names the input and the allowed values, on one line."""
    cases = [(dict(methods=("token", "vibes")),
              "methods token,vibes: unknown 'vibes' (choose from token, seq, text)"),
             (dict(methods=()), "methods (none): empty (choose from token, seq, text)"),
             (dict(strategy="fast"),
              "strategy 'fast': unknown (choose from auto, naive, padded, packed, prefix_cache)"),
             (dict(parse_mode="label"), "parse mode 'label': unknown (choose from label_aware, paper)")]
    for kwargs, message in cases:
        with pytest.raises(InputError) as e:
            ProbeSettings(**kwargs)
        assert str(e.value) == message


def test_auto_strategy_choice(smol, requests):
    engine = ProbeEngine(smol, ProbeSettings(methods=("token", "seq")))
    texts = [engine.render(r.prompt)[0] for r in requests]
    assert engine.pick_strategy(texts) == "prefix_cache"  # system prompt + instruction shared
    assert engine.pick_strategy(texts[:1]) == "packed"
    assert ProbeEngine(smol, ProbeSettings(strategy="padded")).pick_strategy(texts) == "padded"


def test_rows_equal_across_strategies_and_are_canonical(smol, requests):
    auto = ProbeEngine(smol, ProbeSettings(methods=("token", "seq"))).probe(requests)
    naive = ProbeEngine(smol, ProbeSettings(methods=("token", "seq"), strategy="naive")).probe(requests)
    for a, n in zip(auto, naive):
        assert a["key"] == n["key"]
        for col in ("token_logits", "token_logits_space", "option_logprob"):
            np.testing.assert_allclose(a[col], n[col], atol=1e-4, rtol=0)
    # the shuffled variant shows the same options in another order: its raw numbers are in
    # display order, its distributions in canonical order
    base = {(r["style"], r["qid"]): r for r in auto if r["variant"] == "baseline"}
    for r in (r for r in auto if r["variant"] == "shuffle"):
        order = r["display_order"]
        assert sorted(order) == list(range(len(order)))
        b = base[(r["style"], r["qid"])]
        # the same option text is scored in both prompts, so its seq log-likelihood per token
        # differs only through the prompt; the canonical index of the displayed option is kept
        assert len(r["p_seq"]) == len(b["p_seq"]) == len(order)
        assert r["labels"] == [b["labels"][i] for i in order]


def test_a_call_does_not_depend_on_earlier_calls(smol, requests):
    """Resumable sweeps need a chunk's numbers to be the same whether or not other chunks ran
    before it in the process (cached prefixes must not leak across calls)."""
    settings = ProbeSettings(methods=("token", "seq"), strategy="prefix_cache")
    fresh = ProbeEngine(smol, settings).probe(requests[2:])
    warm_engine = ProbeEngine(smol, settings)
    warm_engine.probe(requests[:2])
    warm = warm_engine.probe(requests[2:])
    for a, b in zip(fresh, warm):
        assert a["token_logits"] == b["token_logits"] and a["option_logprob"] == b["option_logprob"]
