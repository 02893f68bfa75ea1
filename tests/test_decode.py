"""The split-cache decode step and the continuous-batching sampler against independent full
forward passes (no cache) on tiny random models of every position / block kind."""

import dataclasses
import functools
import types
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valueprobe_jax.engine import decode_loop, processors, sampler, sampling
from valueprobe_jax.models import forward
from valueprobe_jax.models.decode import SplitCache, decode_step, empty_generated, prompt_part

from helpers import TINY_CONFIGS as CONFIGS, random_params

def full_logits(cfg, params, seqs, width=32):
    """Next-token logits after each sequence: one uncached forward over right-padded rows."""
    tok = np.zeros((len(seqs), width), np.int32)
    valid = np.zeros((len(seqs), width), bool)
    for i, s in enumerate(seqs):
        tok[i, :len(s)], valid[i, :len(s)] = s, True
    pos = np.broadcast_to(np.arange(width, dtype=np.int32), tok.shape)
    mask = np.tril(np.ones((width, width), bool))[None] & valid[:, None, :]
    at = np.asarray([[len(s) - 1] for s in seqs], np.int32)
    logits, _ = _forward(cfg)(params, tok, pos, mask, at)
    return np.asarray(logits[:, 0])


@functools.lru_cache(maxsize=None)
def _forward(cfg):
    return jax.jit(lambda p, t, pos, m, at: forward(cfg, p, t, pos, m, logits_at=at))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decode_step_matches_full_forward(name):
    """Rows continuing different prompts (left-padded to one width), each fed its generated
    tokens one step at a time through the split cache, give the logits of an uncached forward
    over prompt + generated tokens (float32, 1e-5)."""
    cfg = CONFIGS[name]
    params = random_params(cfg, std=0.3)  # logits spread over a few units
    rng = np.random.default_rng(1)
    prompts = [list(rng.integers(0, 96, n)) for n in (5, 9, 12)]
    p = 12
    toks = np.zeros((3, p), np.int32)
    for j, t in enumerate(prompts):
        toks[j, p - len(t):] = t
    lens = np.asarray([len(t) for t in prompts], np.int32)
    _, cache = jax.jit(functools.partial(decode_loop.prefill, cfg))(params, toks, lens)
    pk, pv = prompt_part(cache)
    row_prompt = np.asarray([0, 1, 2, 0, 1], np.int32)
    gen = rng.integers(0, 96, (5, 6)).astype(np.int32)
    gk, gv = empty_generated(cfg, 5, 6)
    step = jax.jit(functools.partial(decode_step, cfg))
    plen = lens[row_prompt]
    for t in range(6):
        logits, k, v = step(params, gen[:, t], row_prompt, plen + t,
                            np.broadcast_to(np.arange(6) < t, (5, 6)),
                            plen[:, None] + np.arange(6)[None, :], SplitCache(pk, pv, lens, gk, gv))
        gk = gk.at[:, :, :, :, t].set(k)
        gv = gv.at[:, :, :, t].set(v)
        want = full_logits(cfg, params, [prompts[j] + list(gen[r, :t + 1])
                                         for r, j in enumerate(row_prompt)])
        np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5, rtol=0, err_msg=f"t={t}")


class ByteTokenizer:
    """Printable ASCII as ids 0..94; id 95 is EOS."""

    eos_token_id = 95

    def encode(self, text, add_special_tokens=False):
        return [min(ord(c) - 32, 94) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i + 32) for i in ids if i != self.eos_token_id)


_sample_step = jax.jit(sampling.sample_step)


def sample_key(seed, key, i):
    """The sampler's key of sample ``i`` of the prompt named ``key``, computed independently
    (crc32 of the key, two fold_ins)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), zlib.crc32(key.encode())), i)


def naive_samples(cfg, params, prompt_ids, key, sp, stops):
    """Every sample on its own: an uncached forward per token, the sampler's key scheme."""
    out = []
    for i in range(sp.num_samples):
        k = sample_key(sp.seed, key, i)
        seq, gen = list(prompt_ids), []
        while len(gen) < sp.max_new_tokens:
            logits = full_logits(cfg, params, [seq])
            tok, _ = _sample_step(jnp.asarray(logits), k[None], np.uint32(len(gen)),
                                          np.float32(sp.temperature), np.int32(sp.top_k),
                                          np.float32(sp.top_p))
            gen.append(int(tok[0]))
            seq.append(int(tok[0]))
            if gen[-1] in stops:
                break
        out.append(tuple(gen))
    return out


@pytest.mark.parametrize("sp", [
    sampling.SamplingParams(temperature=1.0, max_new_tokens=9, num_samples=4, seed=7),
    sampling.SamplingParams(temperature=0.8, top_k=6, top_p=0.9, max_new_tokens=9,
                            num_samples=4, seed=3),
    sampling.SamplingParams(temperature=1.0, max_new_tokens=2, num_samples=3, seed=1),
], ids=["t1", "topk-topp", "two-tokens"])
def test_continuous_batching_equals_one_sample_at_a_time(sp):
    """Prompts of two length buckets, samples of many lengths (a fifth of the vocabulary stops
    a sample): the sampler with few rows (constant refilling, shrinking phases) and with many
    equals an uncached per-sample loop token for token."""
    cfg = CONFIGS["llama-gqa-tied"]
    params = random_params(cfg, seed=2, std=0.3)
    tok = ByteTokenizer()
    texts = ["Hi", "Pick A", "Which one? A or B", "Q: yes/no?", "Answer:"]
    keys = [f"k{i}" for i in range(len(texts))]
    stops = list(range(0, 96, 5))
    want = [naive_samples(cfg, params, tok.encode(t), k, sp, set(stops) | {95})
            for t, k in zip(texts, keys)]
    lengths = {len(s) for w in want for s in w}
    assert len(lengths) >= min(4, sp.max_new_tokens), lengths  # really mixes sample lengths
    for max_batch, max_prompts in [(16, 4), (3, 2), (64, 32)]:
        s = sampler.Sampler(cfg, params, tok, stop_token_ids=stops, end_of_turn=(),
                             max_batch=max_batch, max_prompts=max_prompts)
        got = s.generate(texts, keys, sp)
        assert [[g.token_ids for g in r] for r in got] == want, (max_batch, max_prompts)
        assert s.last_stats.tokens == sum(len(x) for w in want for x in w)
        assert s.last_stats.row_steps == s.last_stats.tokens - len(texts) * sp.num_samples


@pytest.mark.parametrize("kw,msg", [
    (dict(max_batch=0), "max_batch: must be >= 1, got 0"),
    (dict(max_prompts=0), "max_prompts: must be >= 1, got 0"),
])
def test_sampler_rejects_bad_sizes(kw, msg):
    from valueprobe_jax.errors import InputError

    with pytest.raises(InputError) as e:
        sampler.Sampler(CONFIGS["llama-gqa-tied"], None, ByteTokenizer(), end_of_turn=(), **kw)
    assert str(e.value) == msg


def test_row_phases_and_power_of_two_parts():
    assert decode_loop.row_phases(64) == [64, 32, 16, 8, 4]
    assert decode_loop.row_phases(5) == [5]
    assert decode_loop.row_phases(1) == [1]
    assert sampler.power_of_two_parts(13) == [8, 4, 1]
    assert sampler.power_of_two_parts(16) == [16]


# ----------------------------------------------------------------------------- the paper's sampler

@functools.lru_cache(maxsize=None)
def _paper_step(temperature, top_k, top_p, penalty, vocab):
    """One token of the reference: the ids of ``ids[:n]`` penalised, then transformers 4.45's
    processing with the settings as Python numbers (as transformers holds them: 1 - top_p in
    double) and the two-level Gumbel-max draw; temperature 0: argmax of the penalised logits."""
    gc = types.SimpleNamespace(temperature=temperature, top_k=top_k, top_p=top_p,
                               repetition_penalty=penalty)

    @jax.jit
    def step(logits, ids, n, key, t):
        seen = processors.seen_mask_from_ids(ids, vocab, jnp.arange(ids.shape[1])[None] < n)
        if temperature == 0:
            return jnp.argmax(processors.repetition_penalty(logits, seen, penalty), axis=-1)[0]
        blocks, mass = sampling.block_masses(processors.paper_logits(logits, seen, gc))
        return sampling.gumbel_draw(jax.random.fold_in(key, t), blocks[0], mass[0])

    return step


def naive_paper_samples(cfg, params, prompt_ids, key, sp, stops):
    """Every sample on its own, the paper's way: an uncached forward per token, the ids of
    prompt + generated tokens so far penalised, processors.paper_logits, the sampler's key scheme
    and two-level Gumbel-max draw; greedy = argmax of the penalised logits."""
    step = _paper_step(sp.temperature, sp.top_k, sp.top_p, sp.repetition_penalty,
                       cfg.vocab_size)
    out = []
    for i in range(sp.num_samples):
        k = sample_key(sp.seed, key, i)
        seq, gen = list(prompt_ids), []
        while len(gen) < sp.max_new_tokens:
            ids = np.zeros((1, 32), np.int32)
            ids[0, :len(seq)] = seq
            tok = int(step(full_logits(cfg, params, [seq]), ids, np.int32(len(seq)), k,
                           np.uint32(len(gen))))
            gen.append(tok)
            seq.append(tok)
            if tok in stops:
                break
        out.append(tuple(gen))
    return out


PAPER_TEXTS = ["Hi", "Pick A", "Which one? A or B", "Q: yes/no?", "Answer:"]  # buckets 16, 24


@pytest.mark.parametrize("sp", [
    sampling.SamplingParams(temperature=1.0, top_k=5, top_p=0.9, repetition_penalty=1.3,
                            max_new_tokens=9, num_samples=4, seed=5, processing="paper"),
    sampling.SamplingParams(temperature=0.7, top_p=0.95, repetition_penalty=0.8,
                            max_new_tokens=9, num_samples=3, seed=2, processing="paper"),
    sampling.SamplingParams(temperature=0.0, repetition_penalty=1.3, max_new_tokens=9,
                            num_samples=2, processing="paper"),
], ids=["rep1.3-topk5-topp0.9", "t0.7-rep0.8-topp0.95", "greedy-rep1.3"])
def test_paper_processing_equals_one_sample_at_a_time(sp):
    """The "paper" program (prompts of two length buckets, few rows: refill and shrink) equals
    an uncached per-sample loop that penalises prompt + generated ids and applies
    processors.paper_logits, token for token; greedy is the argmax of the penalised logits and
    differs from plain greedy (the penalty acts)."""
    cfg = CONFIGS["llama-gqa-tied"]
    params = random_params(cfg, seed=2, std=0.3)
    tok = ByteTokenizer()
    keys = [f"k{i}" for i in range(len(PAPER_TEXTS))]
    stops = list(range(0, 96, 5))
    want = [naive_paper_samples(cfg, params, tok.encode(t), k, sp, set(stops) | {95})
            for t, k in zip(PAPER_TEXTS, keys)]
    if sp.temperature > 0:
        assert len({len(s) for w in want for s in w}) >= 4  # really mixes sample lengths
    for max_batch, max_prompts in [(3, 2), (16, 4)]:
        s = sampler.Sampler(cfg, params, tok, stop_token_ids=stops, end_of_turn=(),
                            max_batch=max_batch, max_prompts=max_prompts)
        got = s.generate(PAPER_TEXTS, keys, sp)
        assert [[g.token_ids for g in r] for r in got] == want, (max_batch, max_prompts)
        assert s.last_stats.row_steps == s.last_stats.tokens - len(PAPER_TEXTS) * sp.num_samples
    # the same settings without the penalty give other tokens: the penalty is applied
    plain = dataclasses.replace(sp, repetition_penalty=1.0)
    other = s.generate(PAPER_TEXTS, keys, plain)
    assert [[g.token_ids for g in r] for r in other] != want
    if sp.temperature == 0:  # and plain paper greedy is ours greedy
        ours = s.generate(PAPER_TEXTS, keys, dataclasses.replace(plain, processing="ours"))
        assert [[g.token_ids for g in r] for r in ours] == [[g.token_ids for g in r]
                                                             for r in other]


def test_paper_without_filters_equals_ours():
    """Penalty 1, top_k 0, top_p 1, temperature 1: the paper program processes nothing (x / 1,
    no mask), so it draws exactly the tokens of "ours" (same logits into the same draw)."""
    cfg = CONFIGS["llama-gqa-tied"]
    params = random_params(cfg, seed=2, std=0.3)
    keys = [f"k{i}" for i in range(len(PAPER_TEXTS))]
    s = sampler.Sampler(cfg, params, ByteTokenizer(), stop_token_ids=list(range(0, 96, 7)),
                        end_of_turn=(), max_batch=4, max_prompts=2)
    sp = sampling.SamplingParams(temperature=1.0, max_new_tokens=8, num_samples=4, seed=9)
    ours = s.generate(PAPER_TEXTS, keys, sp)
    paper = s.generate(PAPER_TEXTS, keys, dataclasses.replace(sp, processing="paper"))
    assert [[(g.token_ids, g.logprobs) for g in r] for r in paper] == \
        [[(g.token_ids, g.logprobs) for g in r] for r in ours]


def test_sampling_params_paper_settings():
    from valueprobe_jax.errors import InputError
    from valueprobe_jax.models.generation_config import GenerationConfig

    qwen = GenerationConfig(do_sample=True, temperature=0.7, top_k=20, top_p=0.8,
                            repetition_penalty=1.05, eos_token_ids=(151645, 151643))
    sp = sampling.SamplingParams.from_generation_config(qwen)
    assert sp == sampling.SamplingParams(temperature=1.0, top_k=20, top_p=0.8,
                                         repetition_penalty=1.05, max_new_tokens=64,
                                         num_samples=10, seed=0, processing="paper")
    assert sampling.SamplingParams.ratings_from_generation_config(qwen) == dataclasses.replace(
        sp, temperature=0.7, max_new_tokens=20, num_samples=1)
    greedy = sampling.SamplingParams.ratings_from_generation_config(
        GenerationConfig(repetition_penalty=1.2))  # do_sample false: greedy, penalty kept
    assert (greedy.temperature, greedy.repetition_penalty, greedy.processing) == (0.0, 1.2,
                                                                                  "paper")
    for bad, msg in [
        (dict(processing="hf"), "processing: must be one of ours, paper, got 'hf'"),
        (dict(repetition_penalty=0.0), "repetition_penalty: must be a finite number > 0, got 0.0"),
        (dict(repetition_penalty=1.05),
         "repetition_penalty: 1.05 needs processing='paper' ('ours' has no repetition penalty)"),
    ]:
        with pytest.raises(InputError) as e:
            sampling.SamplingParams(**bad).validate()
        assert str(e.value) == msg
    sampling.SamplingParams(repetition_penalty=1.05, processing="paper").validate()


def test_sampler_stops_on_exactly_the_given_eos_list():
    """stop_token_ids=gc.eos_token_ids, end_of_turn=(), always_stop_at_eos=False: the stop list
    is exactly the generation config's (the tokenizer's eos no longer stops)."""
    cfg = CONFIGS["llama-gqa-tied"]
    tok = ByteTokenizer()
    default = sampler.Sampler(cfg, None, tok, stop_token_ids=[3, 7], end_of_turn=())
    assert default.stop_codes == {95: decode_loop.EOS, 3: decode_loop.END_OF_TURN,
                                  7: decode_loop.END_OF_TURN}
    exact = sampler.Sampler(cfg, None, tok, stop_token_ids=[3, 7], end_of_turn=(),
                            always_stop_at_eos=False)
    assert exact.stop_codes == {3: decode_loop.END_OF_TURN, 7: decode_loop.END_OF_TURN}
    params = random_params(cfg, seed=2, std=0.3)
    sp = sampling.SamplingParams(temperature=1.0, max_new_tokens=12, num_samples=8, seed=1)
    for s, stops in [(sampler.Sampler(cfg, params, tok, stop_token_ids=[95], end_of_turn=(),
                                      always_stop_at_eos=False), {95}),
                     (sampler.Sampler(cfg, params, tok, stop_token_ids=[4], end_of_turn=(),
                                      always_stop_at_eos=False), {4})]:
        gens = [g for r in s.generate(PAPER_TEXTS, [str(i) for i in range(5)], sp) for g in r]
        for g in gens:
            assert not stops & set(g.token_ids[:-1])
            assert (g.finish_reason == "length") == (g.token_ids[-1] not in stops)
        if stops == {4}:  # 95 no longer stops a sample
            assert any(95 in g.token_ids for g in gens)


def test_paper_processing_sharded_equals_single_device():
    """The paper program pinned to a mesh (prompt ids over the batch axes, its scalars
    replicated) gives the single-device tokens."""
    from valueprobe_jax.parallel import sharding as sh

    from helpers import SHARDABLE

    params = random_params(SHARDABLE)
    keys = [f"k{i}" for i in range(len(PAPER_TEXTS))]
    sp = sampling.SamplingParams(temperature=1.0, top_k=5, top_p=0.9, repetition_penalty=1.3,
                                 max_new_tokens=6, num_samples=4, seed=3, processing="paper")
    kw = dict(stop_token_ids=list(range(0, 96, 5)), end_of_turn=(), max_batch=8)
    ref = sampler.Sampler(SHARDABLE, params, ByteTokenizer(), **kw).generate(PAPER_TEXTS, keys, sp)
    got = sampler.Sampler(SHARDABLE, params, ByteTokenizer(), mesh=sh.make_mesh("data=2,tensor=4"),
                          **kw).generate(PAPER_TEXTS, keys, sp)
    assert [[g.token_ids for g in r] for r in got] == [[g.token_ids for g in r] for r in ref]
