"""Option scoring: the four strategies give the same numbers, and those equal a plain full forward
per option written out here; tokenization rules (boundary merge, label tokens, BOS); the tree
layout; action-rating distributions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valueprobe_jax.probing import prompts as P
from valueprobe_jax.engine import STRATEGIES, Scorer, ScoreRequest
from valueprobe_jax.engine.calls import bucket_length
from valueprobe_jax.engine.cores import tree_mask
from valueprobe_jax.engine.flops import flops_estimate
from valueprobe_jax.engine.packing import Item, Row, min_token_count
from valueprobe_jax.engine.requests import encode_request, prompt_add_special_tokens
from valueprobe_jax.engine.scorer import rating_distribution
from valueprobe_jax.errors import InputError
from valueprobe_jax.vocabulary import STYLES
from helpers import TINY_CONFIGS, random_params
from valueprobe_jax.models.layers import causal_mask, forward

VOCAB = 49152  # the SmolLM2 tokenizer's
TINY = {c.family: c.replace(vocab_size=VOCAB) for c in TINY_CONFIGS.values()}  # llama, falcon, bloom
# a prompt whose last characters merge with the continuation's first ones ("Hel" + "lo")
MERGE = ScoreRequest("merge", "<|im_start|>user\nSay hello<|im_end|>\n<|im_start|>assistant\nHel",
                       ["lo there<|im_end|>\n", "p me<|im_end|>\n", "lo<|im_end|>\n"],
                       ["A", "B", "C"])


@pytest.fixture(scope="module")
def smol():
    from valueprobe_jax.models.checkpoints import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def tok(smol):
    return smol.tokenizer


@pytest.fixture(scope="module")
def questions(data_dir):
    from valueprobe_jax.data.questions import load_question_bank

    bank = load_question_bank(data_dir, download=False)
    by_k = {k: min((q for q in bank if len(q.options) == k), key=lambda q: len(q.question))
            for k in (3, 10)}
    return by_k


def requests_for(tokenizer, questions, styles=STYLES):
    out = []
    for q in questions:
        for style in styles:
            pr = P.build_prompt(q, style, "baseline")
            out.append(ScoreRequest(pr.key, P.render(pr, tokenizer, instruct=True),
                                      P.option_continuations(pr, tokenizer, instruct=True),
                                      list(pr.labels)))
    return out


# ---------------------------------------------------------------------------- plain reference

@functools.lru_cache(maxsize=None)
def _plain_forward(cfg):
    def fn(params, tokens, valid, at):
        t = tokens.shape[1]
        logits, _ = forward(cfg, params, tokens, jnp.arange(t)[None], causal_mask(valid),
                            logits_at=at[None])  # every position runs; the head where we read
        return logits[0], jax.nn.log_softmax(logits[0], axis=-1)
    return jax.jit(fn)


def plain_scores(cfg, params, tokenizer, req, length=256):
    """One full forward over prompt + option for every option (and one over the prompt for the
    label logits), each sequence right-padded to ``length`` with a causal mask; continuation ids
    cut from tokenize(prompt + continuation) unless the tokenizer merged across the boundary."""
    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def run(seq, first):  # logits and log-softmax at positions first .. first + 63
        t = np.zeros((1, length), np.int32)
        t[0, :len(seq)] = seq
        at = np.minimum(np.arange(first, first + 64), length - 1)
        logits, lsm = _plain_forward(cfg)(params, t, np.arange(length)[None] < len(seq), at)
        return np.asarray(logits, np.float64), np.asarray(lsm, np.float64)

    prompt = ids(req.prompt)
    n = len(prompt)
    logits, _ = run(prompt, n - 1)
    bare = [logits[0, ids(lab)[0]] for lab in req.labels]
    space = [logits[0, ids(" " + lab)[0]] for lab in req.labels]
    loglik, split = [], False
    for cont in req.continuations:
        full = ids(req.prompt + cont)
        if full[:n] != prompt:
            full, split = prompt + ids(cont), True
        assert len(full) - n <= 64
        _, lsm = run(full, n - 1)
        loglik.append(sum(lsm[j - n, full[j]] for j in range(n, len(full))))
    return np.array(bare), np.array(space), np.array(loglik), split


def assert_same(results, reference, *, atol_logit, atol_token):
    """Token logits within atol_logit; option log-likelihoods within atol_token per token."""
    for a, b in zip(results, reference):
        assert a.key == b.key
        np.testing.assert_allclose(a.token_logits, b.token_logits, rtol=0, atol=atol_logit)
        np.testing.assert_allclose(a.token_logits_space, b.token_logits_space, rtol=0,
                                   atol=atol_logit)
        np.testing.assert_array_equal(a.option_ntokens, b.option_ntokens)
        assert np.all(np.abs(a.option_logprob - b.option_logprob) <= atol_token * a.option_ntokens)


# ---------------------------------------------------------------------------- equality

@pytest.mark.parametrize("family", sorted(TINY))
def test_strategies_equal_plain_forward_on_tiny_models(family, tok, questions):
    cfg = TINY[family]
    params = random_params(cfg, seed=len(family))
    reqs = requests_for(tok, [questions[3], questions[10]]) + [MERGE]
    # one row length and at most two rows per call: few distinct shapes, so few compiles
    scorer = Scorer((cfg, params, tok), length_buckets=(256,), max_batch=2)
    results = {s: scorer.score(reqs, strategy=s) for s in STRATEGIES}
    diffs = {}
    for req, *per_strategy in zip(reqs, *results.values()):
        bare, space, loglik, split = plain_scores(cfg, params, tok, req)
        assert [r.boundary_split for r in per_strategy] == [split] * 4
        for name, r in zip(results, per_strategy):
            d = max(np.abs(r.token_logits - bare).max(), np.abs(r.token_logits_space - space).max(),
                    np.abs(r.option_logprob - loglik).max())
            diffs[name] = max(diffs.get(name, 0.0), d)
    assert max(diffs.values()) < 1e-5, diffs
    assert [len(r.option_logprob) for r in results["packed"]] == [3, 3, 3, 10, 10, 10, 3]


def test_strategies_agree_on_smollm2(smol, questions):
    # k=3 in every style here; k=10 in every style in the slow test below (and on tiny models)
    _check_smollm2(smol, requests_for(smol.tokenizer, [questions[3]]))


@pytest.mark.slow
def test_strategies_agree_on_smollm2_ten_options(smol, questions):
    _check_smollm2(smol, requests_for(smol.tokenizer, [questions[10]]))


def _check_smollm2(smol, reqs):
    scorer = Scorer(smol, per_octave=1)
    results = {s: scorer.score(reqs, strategy=s) for s in STRATEGIES}
    # float32 through 30 layers: the same forward at two padded lengths already differs by
    # ~3e-5 on logits of size ~30 and ~1.3e-5 per token on log-likelihoods (see the bench notes),
    # so agreement is asserted at 1e-5 relative to the logit scale.
    scale = max(np.abs(r.token_logits_space).max() for r in results["naive"])
    for s in ("padded", "packed", "prefix_cache"):
        assert_same(results[s], results["naive"], atol_logit=1e-5 * scale,
                    atol_token=1e-5 * scale)
    for r in results["naive"]:
        assert not r.boundary_split
        assert np.all(np.isfinite(r.option_logprob)) and np.all(r.option_logprob < 0)


def test_packed_rows_hold_every_distinct_token_once(tok, questions):
    cfg = TINY["llama"]
    reqs = requests_for(tok, [questions[3]])  # default and prefixed share the whole prompt
    enc = [encode_request(tok, r) for r in reqs]
    minimum = min_token_count(enc)
    separate = sum(len(e.prompt) + sum(map(len, e.options)) for e in enc)
    assert minimum < 0.75 * separate
    for strategy in ("packed", "prefix_cache"):
        scorer = Scorer((cfg, random_params(cfg, 0), tok), length_buckets=(512,))
        scorer.score(reqs, strategy=strategy)
        if strategy == "packed":  # one row: the prefix tree of all sequences, exactly
            assert scorer.stats.rows == 1
            assert scorer.stats.tokens_real == minimum
        else:  # default + prefixed continue one cached prefix; one-shot's system text differs
            # after a few tokens (< min_prefix), so it is its own group and repeats those few
            assert scorer.stats.rows == 2
            assert minimum < scorer.stats.tokens_real < minimum + scorer.min_prefix


# ---------------------------------------------------------------------------- tokenization

def test_boundary_merge_is_split_at_the_character_boundary(tok):
    e = encode_request(tok, MERGE)
    assert e.boundary_split
    prompt = tok(MERGE.prompt, add_special_tokens=False)["input_ids"]
    assert list(e.prompt) == prompt
    # "Hello" is one token, so cutting tokenize(prompt + "lo...") after the prompt's ids fails
    joint = tok(MERGE.prompt + MERGE.continuations[0], add_special_tokens=False)["input_ids"]
    assert joint[:len(prompt)] != prompt
    assert list(e.options[0]) == tok(MERGE.continuations[0], add_special_tokens=False)["input_ids"]
    plain = encode_request(tok, ScoreRequest("x", "Answer:", [" A. Yes<|im_end|>\n"], ["A"]))
    assert not plain.boundary_split
    assert list(plain.options[0]) == tok(" A. Yes<|im_end|>\n", add_special_tokens=False)["input_ids"]


def test_label_tokens_and_bos_rule(tok):
    e = encode_request(tok, ScoreRequest("k", "Q: pick\nAnswer:", ["a", "b", "c"],
                                             ["A", "a", "10"]))
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert e.label_ids[0].tolist() == [ids("A")[0], ids(" A")[0]]
    assert e.label_ids[1].tolist() == [ids("a")[0], ids(" a")[0]]
    assert e.label_multi[:2].tolist() == [[False, False], [False, False]]
    assert ids("10") == ids("1") + ids("0")  # SmolLM2 splits digits
    assert e.label_ids[2, 0] == ids("1")[0] and e.label_multi[2].tolist() == [True, True]
    # chat text that starts with the BOS string gets no second one; plain text follows defaults
    assert tok.bos_token == "<|im_start|>"
    assert not prompt_add_special_tokens(tok, "<|im_start|>user\nhi<|im_end|>\n")
    assert prompt_add_special_tokens(tok, "Question: hi")


def test_bad_input(tok):
    cfg = TINY["llama"]
    scorer = Scorer((cfg, random_params(cfg, 0), tok))
    with pytest.raises(InputError, match="strategy"):
        scorer.score([MERGE], strategy="fastest")
    with pytest.raises(InputError, match="continuation 0 is empty"):
        scorer.score([ScoreRequest("e", "hi", [""], ["A"])])
    with pytest.raises(InputError, match="empty prompt"):
        scorer.score([ScoreRequest("e", "", ["x"], ["A"])])


# ---------------------------------------------------------------------------- tree layout

def test_tree_layout_and_mask_by_hand():
    row = Row()
    row.add(Item(0, (5, 6), ((7, 8), (9,)), (0, 1), ()))
    row.add(Item(1, (5, 4), ((7,),), (0,), ()))  # shares the root token 5 with item 0
    slot, toks, depth, ends = row.layout()
    # depth-first: 5 [6 [7 [8], 9], 4 [7]]
    assert toks.tolist() == [5, 6, 7, 8, 9, 4, 7]
    assert depth.tolist() == [0, 1, 2, 3, 2, 1, 2]
    assert ends.tolist() == [7, 5, 4, 4, 5, 7, 7]
    mask = np.asarray(tree_mask(jnp.asarray(ends[None])))[0]
    parent = [-1, 0, 1, 2, 1, 0, 5]
    want = np.zeros((7, 7), bool)
    for t in range(7):
        s = t
        while s >= 0:
            want[t, s] = True
            s = parent[s]
    np.testing.assert_array_equal(mask, want)
    assert row.cost(Item(2, (5, 6), ((7, 1),), (0,), ())) == 1  # only the final 1 is new


def test_bucket_lengths():
    assert [bucket_length(n) for n in (1, 33, 65, 100, 150, 300)] == [32, 40, 80, 112, 160, 320]
    assert [bucket_length(n, per_octave=1) for n in (33, 64, 65, 129)] == [64, 64, 128, 256]


# ---------------------------------------------------------------------------- ratings

def test_rating_distribution_equals_plain_next_token_probabilities(tok):
    cfg = TINY["llama"]
    params = random_params(cfg, 1)
    prompt = ("<|im_start|>user\nRate the action on a scale of 1 to 10. Answer with only the "
              "number.<|im_end|>\n<|im_start|>assistant\n")
    [r] = rating_distribution((cfg, params, tok), prompts=[("r", prompt)],
                                length_buckets=(256,))
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    p_ids = ids(prompt)
    logits, _ = forward(cfg, params, jnp.asarray([p_ids + ids("1")]),
                        jnp.arange(len(p_ids) + 1)[None],
                        causal_mask(jnp.ones((1, len(p_ids) + 1), bool)))
    logits = np.asarray(logits[0], np.float64)
    digits = np.array([logits[-2, ids(str(d))[0]] for d in range(1, 10)])  # " 7" is 2 tokens
    p = np.exp(digits - digits.max())
    p /= p.sum()
    nxt = logits[-1] - logits[-1].max()
    q = np.exp(nxt[ids("0")[0]]) / np.exp(nxt).sum()
    want = np.concatenate([[p[0] * (1 - q)], p[1:], [p[0] * q]])
    assert r.ten_split
    np.testing.assert_allclose(r.p_zero_after_one, q, rtol=1e-4)
    np.testing.assert_allclose(r.probs, want, atol=1e-6)
    np.testing.assert_allclose(r.expected, np.dot(np.arange(1, 11), want), atol=1e-5)


def test_flop_model_matches_xla_cost_analysis():
    """The bench's two FLOP counts agree: our config formula and XLA's cost analysis of the
    compiled cores (scan body counted once by XLA, so scaled by the layer count)."""
    from valueprobe_jax.bench.xla_cost import xla_costs

    # wide enough that the matmuls the formula counts dominate the elementwise work XLA also counts
    cfg = TINY["llama"].replace(num_layers=3, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16,
                                intermediate_size=96)
    shapes = {("tree", 2, 128, 128, 32, 64): 2, ("naive", 1, 64, 64, 16, 64): 1,
              ("prefill", 1, 64, 64, 0, 0): 1, ("cached", 1, 64, 128, 16, 64): 1}
    for key, calls in shapes.items():
        head = key[2] if key[0] == "naive" else key[4]
        ours = calls * flops_estimate(cfg, key[1], key[2], key[3], head)
        assert xla_costs(cfg, {key: calls})["xla_flops"] == pytest.approx(ours, rel=0.1)
