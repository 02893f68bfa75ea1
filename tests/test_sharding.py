"""Sharding on 8 simulated CPU devices: meshes, rules with fallbacks, sharded forward / sampling
equal to single-device, orbax restore into a sharded layout, the multi-host split and the merge."""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from valueprobe_jax.parallel import sharding as sh
from valueprobe_jax.errors import InputError
from valueprobe_jax.experiments.merge import merge_shards
from valueprobe_jax.models import Decoder, KVCache, ModelConfig, causal_mask, forward
from valueprobe_jax.models.layers import LOGICAL_AXES
from helpers import SHARDABLE, random_params
from valueprobe_jax.parallel.multihost import (WorkSplit, agree, host_slice, initialize_distributed,
                                      multihost_requested, work_split)

MESHES = ["data=2,tensor=4", "fsdp=8", "data=8"]

# 6 heads / 3 kv heads / vocab 99 / mlp 36 / embed 36: tensor=4 and fsdp=8 must fall back
ODD = ModelConfig(family="llama", vocab_size=99, hidden_size=36, num_layers=2, num_heads=6,
                  num_kv_heads=3, head_dim=6, intermediate_size=36, qkv_bias=True)


@pytest.fixture(scope="module")
def tiny_params():
    return random_params(SHARDABLE)


def _batch(cfg, b=8, t=10, seed=1):
    tok = np.asarray(jax.random.randint(jax.random.key(seed), (b, t), 0, cfg.vocab_size), np.int32)
    valid = np.ones((b, t), bool)
    valid[1, t - 3:] = False  # a right-padded row
    pos = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy()
    return tok, pos, np.asarray(causal_mask(jnp.asarray(valid)))


# ----------------------------------------------------------------------------- mesh spec

def test_parse_mesh_spec_forms():
    assert sh.parse_mesh_spec("data=2,tensor=4", 8) == {"data": 2, "fsdp": 1, "tensor": 4}
    assert sh.parse_mesh_spec({"fsdp": 8}, 8) == {"data": 1, "fsdp": 8, "tensor": 1}
    cd = ml_collections.ConfigDict({"data": 2, "fsdp": 2, "tensor": 2})
    assert sh.parse_mesh_spec(cd, 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert sh.parse_mesh_spec("tensor=2,data=-1", 8) == {"data": 4, "fsdp": 1, "tensor": 2}
    assert sh.parse_mesh_spec("", 8) == {"data": 8, "fsdp": 1, "tensor": 1}
    mesh = sh.make_mesh("data=2,tensor=4")
    assert mesh.axis_names == ("data", "fsdp", "tensor") and dict(mesh.shape) == {
        "data": 2, "fsdp": 1, "tensor": 4}


@pytest.mark.parametrize("spec,msg", [
    ("data=2,tensor=2", "mesh 'data=2,tensor=2': axis sizes multiply to 4 but there are 8 devices"),
    ("data=2,model=4", "mesh 'data=2,model=4': unknown axis 'model'"),
    ("data=two", "mesh 'data=two': expected axis=size pairs"),
    ({"fsdp": 0}, "mesh {'fsdp': 0}: axis 'fsdp' size must be a positive integer"),
    ("data=-1,fsdp=-1", "at most one axis may be -1"),
])
def test_parse_mesh_spec_errors(spec, msg):
    with pytest.raises(InputError) as e:
        sh.make_mesh(spec)
    assert msg in str(e.value)


# ----------------------------------------------------------------------------- rules

def test_decoder_metadata_matches_rules_table():
    axes = sh.logical_axes_of(nnx.eval_shape(lambda: Decoder(ODD, rngs=nnx.Rngs(0))))
    assert axes and all(LOGICAL_AXES[k] == v for k, v in axes.items())


def test_param_pspecs_and_fallbacks():
    mesh = {"data": 1, "fsdp": 2, "tensor": 4}
    specs, fb = sh.param_pspecs(SHARDABLE, mesh)
    assert fb == []
    assert specs["embed"] == P("tensor", "fsdp")
    assert specs["layers"]["wq"] == P(None, "fsdp", "tensor")
    assert specs["layers"]["wo"] == P(None, "tensor", None, "fsdp")
    assert specs["layers"]["w_down"] == P(None, "tensor", "fsdp")
    assert specs["lm_head"] == P("fsdp", "tensor")
    assert specs["layers"]["attn_norm_scale"] == P(None, "fsdp")
    specs, fb = sh.param_pspecs(ODD, {"data": 1, "fsdp": 8, "tensor": 1})
    assert specs["layers"]["wq"] == P() and specs["embed"] == P()  # 36 % 8 != 0
    specs, fb = sh.param_pspecs(ODD, {"data": 2, "fsdp": 1, "tensor": 4})
    lines = {str(f) for f in fb}
    assert "layers/wq: heads (6) not divisible by tensor=4, replicated over tensor" in lines
    assert "layers/wk: kv_heads (3) not divisible by tensor=4, replicated over tensor" in lines
    assert "lm_head: vocab (99) not divisible by tensor=4, replicated over tensor" in lines
    assert specs["layers"]["w_up"] == P(None, None, "tensor")  # mlp 36 % 4 == 0 still splits


def test_batch_and_cache_specs():
    mesh = {"data": 2, "fsdp": 2, "tensor": 2}
    assert sh.batch_pspec((8, 5), mesh) == P(("data", "fsdp"))
    assert sh.batch_pspec((2, 5), mesh) == P("data")  # 2 rows: fsdp falls back
    assert sh.batch_pspec((3, 5), mesh) == P()
    specs, fb = sh.cache_pspecs(SHARDABLE, mesh, batch=4, capacity=16)
    assert specs.k == P(None, ("data", "fsdp"), None, "tensor") and specs.pos == P(("data", "fsdp"))
    specs, fb = sh.cache_pspecs(ODD, {"data": 1, "fsdp": 1, "tensor": 2}, batch=4, capacity=16)
    assert specs.k == P() and [f.logical for f in fb] == ["kv_heads"]


# ----------------------------------------------------------------------------- forward parity

def _sharded_forward(cfg, params, mesh, tok, pos, mask):
    p = sh.shard_params(params, mesh, cfg)
    fn = sh.jit_sharded(lambda p, t, q, m: forward(cfg, p, t, q, m)[0], mesh,
                        in_shardings=(sh.param_shardings(cfg, mesh), *sh.batch_shardings((tok, pos, mask), mesh)),
                        out_shardings=sh.logits_sharding(mesh, tok.shape + (cfg.vocab_size,)))
    return p, fn(p, *sh.shard_batch((tok, pos, mask), mesh))


@pytest.mark.parametrize("spec", MESHES)
def test_forward_matches_single_device(tiny_params, spec):
    tok, pos, mask = _batch(SHARDABLE)
    ref, _ = jax.jit(functools.partial(forward, SHARDABLE))(tiny_params, tok, pos, mask)
    mesh = sh.make_mesh(spec)
    p, out = _sharded_forward(SHARDABLE, tiny_params, mesh, tok, pos, mask)
    assert float(jnp.max(jnp.abs(out - ref))) <= 1e-5
    # the layout really is split: each device holds 1/(fsdp*tensor) of wq, 1/(data*fsdp) of the rows
    n = mesh.shape["fsdp"] * mesh.shape["tensor"]
    wq = p["layers"]["wq"]
    assert wq.sharding == NamedSharding(mesh, sh.param_pspecs(SHARDABLE, mesh)[0]["layers"]["wq"])
    assert all(s.data.size == wq.size // n for s in wq.addressable_shards)
    rows = mesh.shape["data"] * mesh.shape["fsdp"]
    assert all(s.data.shape[0] == 8 // rows for s in out.addressable_shards)


def test_forward_non_divisible_falls_back():
    params = random_params(ODD, seed=1)
    tok, pos, mask = _batch(ODD, b=6)
    ref, _ = jax.jit(functools.partial(forward, ODD))(params, tok, pos, mask)
    for spec in ("data=2,tensor=4", "fsdp=8"):
        mesh = sh.make_mesh(spec)
        assert sh.sharding_fallbacks(ODD, mesh)  # reported
        _, out = _sharded_forward(ODD, params, mesh, tok, pos, mask)
        assert float(jnp.max(jnp.abs(out - ref))) <= 1e-5


def test_cached_decode_step_sharded(tiny_params):
    """Prefill into a sharded KVCache, then one cached step: same logits as single device."""
    cfg, b, t, cap = SHARDABLE, 4, 6, 8
    tok, pos, _ = _batch(cfg, b=b, t=t + 1)
    full_mask = np.tril(np.ones((t + 1, cap), bool), k=0)[None].repeat(b, 0)

    def run(params, cache):
        _, cache = forward(cfg, params, tok[:, :t], pos[:, :t], full_mask[:, :t], cache=cache,
                           cache_index=0)
        logits, cache = forward(cfg, params, tok[:, t:], pos[:, t:], full_mask[:, t:t + 1],
                                cache=cache, cache_index=t)
        return logits, cache

    ref, _ = jax.jit(run)(tiny_params, KVCache.zeros(cfg, b, cap))
    mesh = sh.make_mesh("data=2,tensor=4")
    cs = sh.cache_shardings(cfg, mesh, b, cap)
    fn = sh.jit_sharded(run, mesh, in_shardings=(sh.param_shardings(cfg, mesh), cs),
                        out_shardings=(sh.logits_sharding(mesh, (b, 1, cfg.vocab_size)), cs))
    cache0 = jax.device_put(KVCache.zeros(cfg, b, cap), cs)
    out, cache = fn(sh.shard_params(tiny_params, mesh, cfg), cache0)
    assert float(jnp.max(jnp.abs(out - ref))) <= 1e-5
    assert cache.k.sharding.spec == P(None, "data", None, "tensor")
    assert cache.k.addressable_shards[0].data.shape == (2, 2, cap, 1, 8)


# ----------------------------------------------------------------------------- sampling parity

class CharTokenizer:
    """Bytes as token ids (the tiny model's vocabulary is 96: printable ASCII - 32)."""

    eos_token_id = 95

    def encode(self, text, add_special_tokens=False):
        return [min(ord(c) - 32, 94) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i + 32) for i in ids if i != self.eos_token_id)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self.encode(text)}


def test_scoring_matches_single_device(tiny_params):
    """Token logits and option log-likelihoods of the packed and prefix-cache strategies on every
    mesh equal the single-device numbers (float32, 1e-5)."""
    engine = pytest.importorskip("valueprobe_jax.engine")
    system = "You are asked a survey question. Answer with one label.\n"
    reqs = [engine.ScoreRequest(f"q{i}", f"{system}Q{i}: {q}\nAnswer:",
                                 [f" {lab}. {opt}" for lab, opt in zip("ABCD", opts)], list("ABCD")[:len(opts)])
            for i, (q, opts) in enumerate([("Is family important?", ["Very", "Rather", "Not"]),
                                           ("Trust people?", ["Yes", "No"]),
                                           ("How happy are you?", ["Very", "Quite", "Not very", "Not at all"])])]
    tok = CharTokenizer()
    runs = [("packed", s) for s in MESHES] + [("prefix_cache", "data=2,tensor=4")]
    refs = {st: engine.Scorer((SHARDABLE, tiny_params, tok), min_prefix=8).score(reqs, st)
            for st in ("packed", "prefix_cache")}
    for st, spec in runs:
        scorer = engine.Scorer((SHARDABLE, tiny_params, tok), min_prefix=8, mesh=sh.make_mesh(spec))
        got = scorer.score(reqs, st)
        kinds = {shape[0] for shape in scorer.stats.shapes}
        assert ("cached" in kinds) == (st == "prefix_cache"), kinds
        for r, g in zip(refs[st], got):
            for field in ("token_logits", "token_logits_space", "option_logprob"):
                np.testing.assert_allclose(getattr(g, field), getattr(r, field), atol=1e-5,
                                           err_msg=f"{st} {spec} {field}")
            np.testing.assert_array_equal(g.option_ntokens, r.option_ntokens)


def test_sampling_matches_single_device(tiny_params):
    """Greedy and temperature-1 generations (same seed) are identical on every mesh; one sampler
    per mesh serves both temperatures (they are traced scalars: no recompilation)."""
    engine = pytest.importorskip("valueprobe_jax.engine")
    prompts = ["Pick A or B:", "Which? ", "Option C is"]
    keys = ["q1", "q2", "q3"]
    sps = [engine.SamplingParams(temperature=t, max_new_tokens=6, num_samples=4, seed=3)
           for t in (0.0, 1.0)]
    tok = CharTokenizer()
    ref_sampler = engine.Sampler(SHARDABLE, tiny_params, tok, max_batch=8, end_of_turn=())
    refs = [ref_sampler.generate(prompts, keys, sp) for sp in sps]
    assert len({x.token_ids for x in refs[1][0]}) > 1  # temperature 1 really samples
    for spec in MESHES:
        sampler = engine.Sampler(SHARDABLE, tiny_params, tok, max_batch=8, end_of_turn=(),
                                   mesh=sh.make_mesh(spec))
        for sp, ref in zip(sps, refs):
            got = sampler.generate(prompts, keys, sp)
            for r, g in zip(ref, got):
                assert [x.token_ids for x in g] == [x.token_ids for x in r], (spec, sp.temperature)
                np.testing.assert_allclose(np.concatenate([x.logprobs for x in g]),
                                           np.concatenate([x.logprobs for x in r]), atol=1e-5)


def test_sampler_rows_per_batch_shard(tiny_params):
    """The Sampler keeps ``max_batch`` rows and ``max_prompts`` prompts per batch shard (data x
    fsdp), so a data axis does not thin out each device's rows; the samples stay the same."""
    engine = pytest.importorskip("valueprobe_jax.engine")
    prompts = [f"Prompt {i}:" for i in range(6)]
    keys = [f"k{i}" for i in range(6)]
    sp = engine.SamplingParams(temperature=1.0, max_new_tokens=5, num_samples=4, seed=1)
    tok = CharTokenizer()
    ref = engine.Sampler(SHARDABLE, tiny_params, tok, max_batch=4, max_prompts=2, end_of_turn=())
    want = ref.generate(prompts, keys, sp)
    assert (ref.last_stats.decode_calls, ref.last_stats.decode_rows) == (3, 3 * 4)
    for spec, ways in (("data=2,tensor=4", 2), ("fsdp=8", 8)):
        s = engine.Sampler(SHARDABLE, tiny_params, tok, max_batch=4, max_prompts=2, end_of_turn=(),
                           mesh=sh.make_mesh(spec))
        assert (s.max_batch, s.max_prompts) == (4 * ways, 2 * ways)
        got = s.generate(prompts, keys, sp)
        assert [[g.token_ids for g in r] for r in got] == [[g.token_ids for g in r] for r in want]
        # 6 prompts in calls of 2 x ways (8 prompt slots at most), 4 x ways rows capped by the
        # call's 4 samples per prompt slot
        calls = -(-6 // (2 * ways))
        slots = [1 << (min(6 - c * 2 * ways, 2 * ways) - 1).bit_length() for c in range(calls)]
        assert s.last_stats.decode_calls == calls, spec
        assert s.last_stats.decode_rows == sum(min(4 * ways, n * 4) for n in slots), spec


def test_shared_prefill_matches_single_device(tiny_params):
    """One prefill for scoring and sampling on a mesh: the same samples as the sharded
    ``generate`` and the single-device shared path, scores within 1e-5."""
    engine = pytest.importorskip("valueprobe_jax.engine")
    from valueprobe_jax.engine.shared_prefill import score_and_generate

    tok = CharTokenizer()
    reqs = [engine.ScoreRequest(f"q{i}", f"Q{i}: {q}\nAnswer:", [f" {a}. {o}" for a, o in
                                zip("ABC", opts)], list("ABC")[:len(opts)])
            for i, (q, opts) in enumerate([("Trust people?", ["Yes", "No"]),
                                           ("How happy are you?", ["Very", "Quite", "Not"]),
                                           ("Is work important?", ["Yes", "No"])])]
    keys = [r.key for r in reqs]
    sp = engine.SamplingParams(temperature=1.0, max_new_tokens=5, num_samples=2, seed=4)
    out = {}
    for spec in (None, "data=2,tensor=4"):
        mesh = sh.make_mesh(spec) if spec else None
        scorer = engine.Scorer((SHARDABLE, tiny_params, tok), mesh=mesh)
        sampler = engine.Sampler(SHARDABLE, tiny_params, tok, max_batch=8, end_of_turn=(),
                                 mesh=mesh)
        plain = sampler.generate([r.prompt for r in reqs], keys, sp)
        enc = scorer.encode(reqs)
        ids = sampler.encode([r.prompt for r in reqs], keys, sp.max_new_tokens)
        scored, gens = score_and_generate(scorer, sampler, enc, ids, keys, sp)
        assert [[g.token_ids for g in x] for x in gens] == [[g.token_ids for g in x] for x in plain]
        out[spec] = scored, gens
    (ref, ref_gens), (got, got_gens) = out.values()
    assert [[g.token_ids for g in x] for x in got_gens] == [[g.token_ids for g in x] for x in ref_gens]
    for r, g in zip(ref, got):
        for field in ("token_logits", "token_logits_space", "option_logprob"):
            np.testing.assert_allclose(getattr(g, field), getattr(r, field), atol=1e-5)


# ----------------------------------------------------------------------------- orbax restore

def test_orbax_restore_into_sharded_layout(tmp_path, tiny_params):
    import orbax.checkpoint as ocp

    mesh = sh.make_mesh("data=2,fsdp=2,tensor=2")
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "ck", tiny_params)
    target = sh.abstract_params(SHARDABLE, mesh)
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(tmp_path / "ck", target)
    want = sh.param_shardings(SHARDABLE, mesh)
    for (path, arr), tgt, ref in zip(jax.tree_util.tree_leaves_with_path(restored),
                                     jax.tree.leaves(want), jax.tree.leaves(tiny_params)):
        assert arr.sharding == tgt, path
        local = tgt.shard_shape(arr.shape)  # each device holds only its slice, never the whole
        assert all(s.data.shape == local for s in arr.addressable_shards), path
        np.testing.assert_array_equal(np.asarray(arr), np.asarray(ref))
    assert restored["layers"]["wq"].addressable_shards[0].data.shape == (2, 16, 4, 8)


def test_checkpoints_restore_orbax_with_shardings(tmp_path, tiny_params):
    checkpoints = pytest.importorskip("valueprobe_jax.models.checkpoints")
    if not hasattr(checkpoints, "restore_orbax"):
        pytest.skip("checkpoints.restore_orbax not written yet")
    mesh = sh.make_mesh("fsdp=4,tensor=2")
    checkpoints.save_orbax(tmp_path / "conv", SHARDABLE, tiny_params)
    cfg, params = checkpoints.restore_orbax(tmp_path / "conv",
                                            shardings=sh.param_shardings(SHARDABLE, mesh))
    for arr, tgt in zip(jax.tree.leaves(params), jax.tree.leaves(sh.param_shardings(SHARDABLE, mesh))):
        assert arr.sharding == tgt
        assert all(s.data.shape == tgt.shard_shape(arr.shape) for s in arr.addressable_shards)
    np.testing.assert_array_equal(np.asarray(params["lm_head"]), np.asarray(tiny_params["lm_head"]))


# ----------------------------------------------------------------------------- multi-host

@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_host_slice_covers_every_item_once(count):
    items = [f"exp|model|style{i % 3}|v{i % 5}|-|Q{i}" for i in range(103)]
    rng = np.random.default_rng(count)
    parts = []
    for host in range(count):
        shuffled = list(rng.permutation(items))  # each host may list items in its own order
        parts.append(host_slice(shuffled, host, count))
    flat = [x for p in parts for x in p]
    assert sorted(flat) == sorted(items) and len(flat) == len(items)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert flat == sorted(items)  # contiguous blocks of the sorted keys


def test_host_slice_objects_and_errors():
    class It:
        def __init__(self, k):
            self.key = k

    got = host_slice([It("b"), It("a"), It("c")], 0, 2)
    assert [i.key for i in got] == ["a"]
    with pytest.raises(ValueError, match="duplicate"):
        host_slice(["a", "a"], 0, 1)
    with pytest.raises(ValueError):
        host_slice(["a"], 2, 2)


def test_initialize_distributed_single_host_is_noop():
    assert multihost_requested({}) is False
    assert multihost_requested({"TPU_WORKER_HOSTNAMES": "10.0.0.2"}) is False
    assert multihost_requested({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}) is True
    assert multihost_requested({"SLURM_NTASKS": "4"}) is True
    assert multihost_requested({"VALUEPROBE_DISTRIBUTED": "0", "SLURM_NTASKS": "4"}) is False
    assert initialize_distributed({}) is False
    assert jax.process_count() == 1
    assert work_split(sh.make_mesh("fsdp=8")) == WorkSplit(0, 1, True, False)
    assert agree([True, False, True]) == [True, False, True]


# ----------------------------------------------------------------------------- merge

def _shard(path, keys, vals):
    pq.write_table(pa.table({"key": keys, "model": ["m"] * len(keys), "p": vals}), path)


def test_merge_dedups_by_key(tmp_path):
    d = tmp_path / "run" / "shards"
    d.mkdir(parents=True)
    _shard(d / "host1.parquet", ["k3", "k1"], [[0.3], [0.1]])
    _shard(d / "host0.parquet", ["k2", "k1", "k4"], [[0.2], [0.1], [0.4]])
    _shard(d / "host2.parquet", ["k4"], [[0.9]])  # same key, different contents
    s = merge_shards(sorted(d.iterdir()), tmp_path / "run" / "results.parquet")
    assert (s.shards, s.rows_in, s.rows_out, s.duplicates, s.conflicting) == (3, 6, 4, 2, 1)
    t = pq.read_table(tmp_path / "run" / "results.parquet")
    assert t.column("key").to_pylist() == ["k1", "k2", "k3", "k4"]
    assert t.column("p").to_pylist()[3] == [0.4]  # first in sorted path order (host0) kept
    assert sorted(os.listdir(tmp_path / "run")) == ["results.parquet", "shards"]  # no temp left


def test_merge_cli(tmp_path, capsys):
    from valueprobe_jax.cli import main

    d = tmp_path / "w" / "shards"
    d.mkdir(parents=True)
    _shard(d / "chunk-000000.parquet", ["a", "b"], [[1.0], [2.0]])
    _shard(d / "chunk-000001.parquet", ["b", "c"], [[2.0], [3.0]])
    assert main(["merge", str(tmp_path / "w")]) == 0
    assert "3 rows out, 1 duplicate(s) dropped" in capsys.readouterr().out
    assert pq.read_table(tmp_path / "w" / "results.parquet").num_rows == 3
    assert main(["merge", str(tmp_path / "missing")]) == 2
    assert "work directory not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the real model (slow)

@pytest.mark.slow
def test_smollm2_sampling_and_scoring_on_meshes():
    """SmolLM2-135M (vocabulary 49152, 30 layers): temperature-1 generations with the same seed
    are token-identical on every mesh, and scoring agrees within float32 reordering noise.

    Inverse-CDF sampling (a float32 cumsum over the vocabulary) is not robust to that noise: a
    draw landing among tail tokens of probability ~1e-6 moves to a neighbour when the sum's
    rounding changes with the layout. Gumbel-max (argmax(logits/T + Gumbel noise)) flips only
    when the two best perturbed scores are within ~1e-5 of each other."""
    from valueprobe_jax.models import checkpoints
    from valueprobe_jax import engine

    m = checkpoints.load_model("smollm2-135m-instruct")
    tok = m.tokenizer
    q = "How important is family in your life?"
    opts = ["Very important", "Rather important", "Not very important", "Not at all important"]
    body = q + "\n" + "\n".join(f"{l}. {o}" for l, o in zip("ABCD", opts)) + "\nAnswer with a label."
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"Survey {i}. {body}"}],
                                       tokenize=False, add_generation_prompt=True) for i in range(3)]
    keys = [f"k{i}" for i in range(3)]
    sp = engine.SamplingParams(temperature=1.0, max_new_tokens=16, num_samples=4, seed=0)
    reqs = [engine.ScoreRequest(k, p, [f"{l}. {o}<|im_end|>\n" for l, o in zip("ABCD", opts)],
                                 list("ABCD")) for k, p in zip(keys, prompts)]
    ref_gen = engine.Sampler(m.cfg, m.params, tok, max_batch=8).generate(prompts, keys, sp)
    ref_sc = engine.Scorer(m).score(reqs)
    for spec in ("data=2,tensor=4", "fsdp=8"):
        mesh = sh.make_mesh(spec)
        got = engine.Sampler(m.cfg, m.params, tok, max_batch=8, mesh=mesh).generate(prompts, keys, sp)
        assert [[g.token_ids for g in r] for r in got] == [[g.token_ids for g in r] for r in ref_gen], spec
        for r, g in zip(ref_sc, engine.Scorer(m, mesh=mesh).score(reqs)):
            np.testing.assert_allclose(g.token_logits, r.token_logits, atol=1e-4, rtol=0)
            np.testing.assert_allclose(g.option_logprob, r.option_logprob, atol=1e-4, rtol=0)
