"""One prefill per prompt (``engine.shared_prefill``): the text method's samples are bit-identical
to ``Sampler.generate``'s, token and seq numbers equal the packed strategy's within float32
rounding, and the counts show every prompt prefilled once and no prompt token scored again."""

import numpy as np
import pytest

from valueprobe_jax.data.questions import load_question_bank
from valueprobe_jax.engine import Sampler, SamplingParams, Scorer, ScoreRequest
from valueprobe_jax.engine.packing import prefix_tree
from valueprobe_jax.engine.shared_prefill import same_prompt_ids, score_and_generate
from valueprobe_jax.models.checkpoints import load_model
from valueprobe_jax.probing import prompts as P
from valueprobe_jax.probing.engine import ProbeEngine, ProbeSettings, build_probe_requests
from helpers import TINY_CONFIGS, random_params

OURS = SamplingParams(temperature=1.0, max_new_tokens=6, num_samples=3, seed=3)
PAPER = SamplingParams(temperature=1.0, top_k=20, top_p=0.9, repetition_penalty=1.3,
                       max_new_tokens=6, num_samples=2, seed=5, processing="paper")


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def requests(data_dir, smol):
    """3 questions (3, 4 and 10 options) x 2 styles: prompts of two length buckets."""
    bank = load_question_bank(data_dir, download=False)
    qs = [next(q for q in bank if len(q.options) == k) for k in (3, 4, 10)]
    out = []
    for q in qs:
        for style in ("default", "one_shot"):
            pr = P.build_prompt(q, style, "baseline")
            out.append(ScoreRequest(pr.key, P.render(pr, smol.tokenizer, instruct=True),
                                    P.option_continuations(pr, smol.tokenizer, instruct=True),
                                    list(pr.labels)))
    return out


def generations(gens):
    return [[(g.token_ids, g.logprobs, g.finish_reason, g.text) for g in per] for per in gens]


def assert_close(got, ref, atol):
    """Token logits and option log-likelihoods within ``atol``; same option token counts."""
    for g, r in zip(got, ref, strict=True):
        assert g.key == r.key
        for field in ("token_logits", "token_logits_space", "option_logprob"):
            np.testing.assert_allclose(getattr(g, field), getattr(r, field), rtol=0, atol=atol,
                                       err_msg=f"{g.key} {field}")
        np.testing.assert_array_equal(g.option_ntokens, r.option_ntokens)
        np.testing.assert_array_equal(g.label_token_ids, r.label_token_ids)


def shared_run(scorer, sampler, reqs, sp):
    keys = [r.key for r in reqs]
    enc = scorer.encode(reqs)
    ids = sampler.encode([r.prompt for r in reqs], keys, sp.max_new_tokens)
    assert same_prompt_ids(enc, ids)
    return enc, score_and_generate(scorer, sampler, enc, ids, keys, sp)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_tiny_models_sample_bit_identically_and_score_as_packed(name, smol, requests):
    """RoPE, ALiBi and Falcon's parallel block: prompts in two decode groups (max_prompts=4)."""
    cfg = TINY_CONFIGS[name].replace(vocab_size=smol.cfg.vocab_size)
    params = random_params(cfg, seed=3, std=0.3)
    tok = smol.tokenizer
    prompts, keys = [r.prompt for r in requests], [r.key for r in requests]
    packed = Scorer((cfg, params, tok)).score(requests, "packed")
    sampler = Sampler(cfg, params, tok, max_prompts=4)
    for sp in (OURS, PAPER) if name.startswith("llama") else (OURS,):
        before = generations(sampler.generate(prompts, keys, sp))
        scorer = Scorer((cfg, params, tok))
        enc, (scored, gens) = shared_run(scorer, sampler, requests, sp)
        assert generations(gens) == before, sp.processing  # bit-identical, logprobs included
        assert_close(scored, packed, atol=1e-5)
        st = sampler.last_stats
        assert (st.prompts, st.prefill_rows, st.decode_calls) == (len(requests), len(requests), 2)
        # scoring ran option tokens only (one prefix tree per prompt), no prompt token
        assert {k[0] for k in scorer.stats.shapes} == {"prompt"}
        assert scorer.stats.tokens_real == sum(prefix_tree([e])[1] - len(e.prompt) for e in enc)


def test_smollm2_samples_bit_identically_and_scores_as_packed(smol, requests):
    reqs = requests[:4]
    scale = 1e-5 * 30  # float32 through 30 layers: 1e-5 relative to logits of size ~30
    packed = Scorer(smol).score(reqs, "packed")
    sampler = Sampler(smol.cfg, smol.params, smol.tokenizer)
    sp = SamplingParams(temperature=1.0, max_new_tokens=8, num_samples=2, seed=1)
    before = generations(sampler.generate([r.prompt for r in reqs], [r.key for r in reqs], sp))
    _, (scored, gens) = shared_run(Scorer(smol), sampler, reqs, sp)
    assert generations(gens) == before
    assert_close(scored, packed, atol=scale)


def test_probe_engine_shares_the_prefill_and_falls_back(smol, data_dir, monkeypatch):
    """"auto" with text on scores from the sampler's prefill (rows as with packed, same texts);
    where the scorer's and sampler's prompt ids differ it scores apart, as before."""
    qs = load_question_bank(data_dir, download=False)[:2]
    reqs = build_probe_requests(qs, ["default", "prefixed"], ["baseline"], [None],
                                experiment="probe", model_name=smol.name)
    kw = dict(samples=2, max_new_tokens=4)
    shared = ProbeEngine(smol, ProbeSettings(**kw))
    assert shared.shares_prefill
    rows = shared.probe(reqs)
    assert shared.last_strategy == "shared_prefill"
    assert shared.sampler.last_stats.prefill_rows == len(reqs)
    assert {k[0] for k in shared.scorer.stats.shapes} == {"prompt"}
    packed = ProbeEngine(smol, ProbeSettings(strategy="packed", **kw))
    assert not packed.shares_prefill
    ref = packed.probe(reqs)
    for a, b in zip(rows, ref, strict=True):
        assert a["generations"] == b["generations"] and a["parsed"] == b["parsed"]
        for col in ("token_logits", "token_logits_space", "option_logprob", "p_token", "p_seq"):
            np.testing.assert_allclose(a[col], b[col], rtol=0, atol=3e-4, err_msg=col)
        assert np.argmax(a["p_token"]) == np.argmax(b["p_token"])
        assert np.argmax(a["p_seq"]) == np.argmax(b["p_seq"])

    other = shared.sampler.encode
    monkeypatch.setattr(shared.sampler, "encode",
                        lambda *a, **k: [(0,) + t for t in other(*a, **k)])  # a BOS the scorer lacks
    shared.probe(reqs)
    assert shared.last_strategy == shared.pick_strategy([shared.render(r.prompt)[0] for r in reqs])
