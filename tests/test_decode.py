"""The split-cache decode step and the continuous-batching sampler against independent full
forward passes (no cache) on tiny random models of every position / block kind."""

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valueprobe_jax.engine import decode_loop, sampler, sampling
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


def naive_samples(cfg, params, prompt_ids, key, sp, stops):
    """Every sample on its own: an uncached forward per token, the sampler's key scheme."""
    out = []
    for i in range(sp.num_samples):
        k = jax.random.fold_in(jax.random.fold_in(jax.random.key(sp.seed),
                                                  zlib.crc32(key.encode())), i)
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
