"""The engine glue on SmolLM2: rows in canonical order, the "auto" strategy choice, that the
strategy never changes the numbers, and (with a stub scorer and sampler whose answers depend
only on the option text) that every variant's stored distributions are the baseline's."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest

from valueprobe_jax.models.checkpoints import load_model
from valueprobe_jax.data.questions import Question, load_question_bank
from valueprobe_jax.errors import InputError
from valueprobe_jax.probing.engine import ProbeEngine, ProbeSettings, build_probe_requests
from valueprobe_jax.vocabulary import METHODS, STYLES, VARIANTS


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
              "strategy 'fast': unknown (choose from auto, shared_prefill, naive, padded, packed, "
              "prefix_cache)"),
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
    # with the text method on, auto scores from the sampler's prefill (test_shared_prefill.py)
    assert not engine.shares_prefill and ProbeEngine(smol, ProbeSettings()).shares_prefill
    assert not ProbeEngine(smol, ProbeSettings(strategy="packed")).shares_prefill


def test_rows_equal_across_strategies_and_are_canonical(smol, requests):
    auto = ProbeEngine(smol, ProbeSettings(methods=("token", "seq"))).probe(requests)
    naive = ProbeEngine(smol, ProbeSettings(methods=("token", "seq"), strategy="naive")).probe(requests)
    assert len(auto) == len(naive) == len(requests)
    for a, n in zip(auto, naive, strict=True):
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
    assert len(fresh) == len(warm) == len(requests) - 2
    for a, b in zip(fresh, warm, strict=True):
        assert a["token_logits"] == b["token_logits"] and a["option_logprob"] == b["option_logprob"]


# ----------------------------------------------------------------------------- variant property

# option text -> (bare-label logit, " label" logit, continuation log-likelihood, its token count):
# a stub model whose every number depends on the option text alone, never on its label or place
BY_TEXT = {"alpha": (0.3, -1.0, -4.0, 2), "bravo": (-1.2, 0.4, -9.5, 3), "charlie": (2.0, 1.1, -3.0, 1),
           "delta": (0.7, -0.2, -6.5, 2), "echo": (-0.4, 0.9, -2.0, 4)}
# what the stub sampler answers, per sample: the displayed label of this option text (None: junk)
PICKS = ("charlie", "alpha", "charlie", None, "delta", "charlie")  # options of both questions
VARIANT_QUESTIONS = [Question("Qa", "Which one?", ("alpha", "bravo", "charlie", "delta")),
                     Question("Qb", "And now?", ("echo", "delta", "charlie", "bravo", "alpha"))]


class TextOnlyScorer:
    """Scores each displayed option by the option text found in its continuation."""

    min_prefix = 10**9

    def forget_prefixes(self):
        pass

    def score(self, reqs, strategy):
        out = []
        for r in reqs:
            texts = [next(t for t in BY_TEXT if t in c) for c in r.continuations]
            assert len(texts) == len(r.labels)
            assert all(f"{lab}. {t}" in c for lab, t, c in zip(r.labels, texts, r.continuations, strict=True))
            bare, space, loglik, ntok = (np.array([BY_TEXT[t][i] for t in texts]) for i in range(4))
            out.append(types.SimpleNamespace(
                token_logits=bare, token_logits_space=space, option_logprob=loglik,
                option_ntokens=ntok.astype(int), label_multi_token=[(False, False)] * len(texts),
                n_prompt_tokens=7, boundary_split=False))
        return out


class TextOnlySampler:
    """Answers "<label>." with the label the prompt displays for each option text of PICKS."""

    def generate(self, prompts, keys, params):
        assert len(prompts) == len(keys)
        out = []
        for prompt in prompts:
            shown = {m.group(2): m.group(1)
                     for m in re.finditer(r"^(\S+)\. (\w+)$", prompt, re.MULTILINE) if m.group(2) in BY_TEXT}
            answers = [f"{shown[t]}." if t is not None else "no idea" for t in PICKS]
            out.append([types.SimpleNamespace(text=a) for a in answers[:params.num_samples]])
        return out


def test_every_variant_stores_the_baseline_distributions(smol):
    """A stub whose numbers depend only on the option text gives the same option the same
    numbers whatever label and position a variant shows it with, so every variant's stored
    canonical p_token / p_seq / p_text must equal the baseline's; a wrong display-order mapping
    (or its inverse used in its place) puts them at other options. The stored raw numbers stay
    in display order: mapped back through display_order by hand they give the stored p."""
    engine = ProbeEngine(smol, ProbeSettings(methods=METHODS, samples=len(PICKS), strategy="packed"))
    engine.scorer, engine._sampler = TextOnlyScorer(), TextOnlySampler()
    requests = build_probe_requests(VARIANT_QUESTIONS, STYLES, VARIANTS, [None], experiment="probe",
                                    model_name=smol.name, shuffle_seed=3)
    rows = engine.probe(requests)
    assert len(rows) == len(requests) == len(STYLES) * len(VARIANTS) * len(VARIANT_QUESTIONS)
    questions = {q.id: q for q in VARIANT_QUESTIONS}
    base = {(r["style"], r["qid"]): r for r in rows if r["variant"] == "baseline"}
    shuffled = [r for r in rows if r["variant"] == "shuffle"]
    # a shuffle that is not its own inverse: mapping by the inverse permutation would show
    assert any([o[i] for i in o] != sorted(o) for o in (r["display_order"] for r in shuffled))
    for req, r in zip(requests, rows, strict=True):
        q, p, order = questions[r["qid"]], req.prompt, r["display_order"]
        assert r["key"] == req.key and sorted(order) == list(range(len(q.options)))
        # displayed option j shows canonical option order[j]'s text, with the label stored for it
        assert [q.options[c] for c in order] == list(p.option_texts_displayed)
        assert r["labels"] == list(p.labels)
        # the stored raw numbers are per displayed option: by text, in display order
        assert r["token_logits"] == [BY_TEXT[t][0] for t in p.option_texts_displayed]
        assert r["option_logprob"] == [BY_TEXT[t][2] for t in p.option_texts_displayed]
        # mapped back by hand (canonical[order[j]] = displayed[j]) they give the stored p
        both = np.exp(np.concatenate([r["token_logits"], r["token_logits_space"]]))
        k = len(order)
        want_token, want_seq = np.empty(k), np.empty(k)
        want_token[order] = (both[:k] + both[k:]) / both.sum()
        per_token = np.exp(np.array(r["option_logprob"]) / np.array(r["option_ntokens"]))
        want_seq[order] = per_token / per_token.sum()
        np.testing.assert_allclose(r["p_token"], want_token, rtol=0, atol=1e-12)
        np.testing.assert_allclose(r["p_seq"], want_seq, rtol=0, atol=1e-12)
        # parsed answers are canonical indices of the picked texts; junk spreads 1/k
        assert r["parsed"] == [q.options.index(t) if t is not None else None for t in PICKS]
        # and the same canonical distributions as the baseline prompt of this style
        b = base[(r["style"], r["qid"])]
        for col in ("p_token", "p_seq", "p_text"):
            assert len(r[col]) == len(b[col]) == k
            np.testing.assert_allclose(r[col], b[col], rtol=0, atol=1e-12, err_msg=f"{r['key']} {col}")
