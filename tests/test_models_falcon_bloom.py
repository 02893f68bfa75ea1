"""Falcon and Bloom decoders against transformers' PyTorch models on tiny random checkpoints.

Each checkpoint is built by transformers' own classes, given random norms and biases (so a
mixed-up LayerNorm or bias would show), saved with save_pretrained (safetensors) and read back
with safetensors alone through the family's config_from_hf / params_from_hf.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from helpers import randomize_torch  # noqa: E402
from valueprobe_jax.models import checkpoints  # noqa: E402
from valueprobe_jax.errors import InputError  # noqa: E402
from valueprobe_jax.models import KVCache, bloom, causal_mask, falcon, forward, hf_weights  # noqa: E402
from valueprobe_jax.models.layers import alibi_slopes  # noqa: E402

VOCAB = 253  # not a power of two

# name -> (family, HF config class name, config kwargs)
TINY = {
    # The Falcon-7B layout: multi-query, parallel attention + MLP, rotary, no biases.
    "falcon-7b-layout": ("falcon", "FalconConfig", dict(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        multi_query=True, parallel_attn=True, bias=False, alibi=False, new_decoder_architecture=False)),
    # Same compute with the other switches: full multi-head [H,3,D] QKV, sequential block, biases.
    "falcon-mha-sequential-bias": ("falcon", "FalconConfig", dict(
        vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
        multi_query=False, parallel_attn=False, bias=True, tie_word_embeddings=False)),
    # Bloom with 6 heads (ALiBi slopes interleaved for a head count that is not a power of two).
    "bloom-6-heads": ("bloom", "BloomConfig", dict(vocab_size=VOCAB, hidden_size=48, n_layer=2, n_head=6)),
}


def _is_norm_scale(name: str) -> bool:
    return ("layernorm" in name or "ln_f" in name) and name.endswith("weight")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (HF model in eval mode, directory with config.json + model.safetensors)."""
    out = {}
    for name, (_, cls, kw) in TINY.items():
        torch.manual_seed(0)
        cfg = getattr(transformers, cls)(**kw)
        model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
        # random norms, biases and weights big enough that logits spread over a few units
        randomize_torch(model, 1, std=0.1, norm_std=0.1, is_norm=_is_norm_scale)
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (model, path)
    return out


def _load(name, path, dtype="float32"):
    """The project's loader: checkpoint directory -> (ModelConfig, parameter tree)."""
    loaded = checkpoints.load_model(path, dtype=dtype)
    assert loaded.cfg.family == TINY[name][0]
    return loaded.cfg, loaded.params


@functools.lru_cache(maxsize=None)
def _fwd(cfg):
    """One jitted forward per config (a whole-program compile is cheaper than eager op-by-op)."""
    return jax.jit(functools.partial(forward, cfg))


def _padded_batch(padding: str):
    rng = np.random.default_rng(0)
    lengths, t = np.array([11, 7, 4]), 11
    tokens = rng.integers(0, VOCAB, (3, t))
    idx = np.arange(t)[None]
    valid = idx < lengths[:, None] if padding == "right" else idx >= (t - lengths)[:, None]
    tokens = np.where(valid, tokens, 0)
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0)  # counted over valid tokens, as HF
    return tokens, valid, positions


def _hf_logits(model, tokens, valid, positions=None):
    kw = {} if positions is None else {"position_ids": torch.tensor(positions)}
    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(valid.astype(np.int64)),
                     **kw).logits.float().numpy()


@pytest.mark.parametrize("name", list(TINY))
def test_padded_batch_logits_match_transformers(tiny, name):
    model, path = tiny[name]
    cfg, params = _load(name, path)
    tokens, valid, positions = _padded_batch("right")
    ref = _hf_logits(model, tokens, valid)
    got, _ = _fwd(cfg)(params, tokens, positions, causal_mask(jnp.asarray(valid)))
    diff = np.abs(np.asarray(got) - ref)[valid].max()
    assert np.abs(ref[valid]).max() > 1.0  # the comparison is not between near-zero logits
    assert diff <= 1e-4, f"{name}: max |logit diff| {diff:.2e}"


def test_bloom_left_padding_matches_transformers(tiny):
    """HF Bloom counts ALiBi positions over the attention mask; we pass the same counts. (ALiBi
    sees only position differences, so a per-row offset would not change these logits.)"""
    model, path = tiny["bloom-6-heads"]
    cfg, params = _load("bloom-6-heads", path)
    tokens, valid, positions = _padded_batch("left")
    ref = _hf_logits(model, tokens, valid)
    got, _ = _fwd(cfg)(params, jnp.asarray(tokens), jnp.asarray(positions), causal_mask(jnp.asarray(valid)))
    assert np.abs(np.asarray(got) - ref)[valid].max() <= 1e-4


def _greedy_with_cache(cfg, params, prompt: np.ndarray, steps: int):
    """Prefill the prompt into a KV cache, then feed one greedy token at a time.
    Returns the tokens (prompt + steps + 1 new) and the logits of every predicting position."""
    b, p = prompt.shape
    cap = p + steps
    step = _fwd(cfg)
    slot = np.arange(cap)
    cache = KVCache.zeros(cfg, b, cap)
    pos = np.broadcast_to(np.arange(p), (b, p))
    mask = np.broadcast_to(slot[None, None, :] <= np.arange(p)[None, :, None], (b, p, cap))
    logits, cache = step(params, prompt, pos, mask, cache=cache, cache_index=0)
    seen = [np.asarray(logits[:, -1])]
    tokens = [prompt] + [seen[-1].argmax(-1)[:, None]]
    for i in range(steps):
        here = p + i
        mask = np.broadcast_to(slot <= here, (b, 1, cap))
        logits, cache = step(params, tokens[-1], np.full((b, 1), here), mask, cache=cache, cache_index=here)
        seen.append(np.asarray(logits[:, -1]))
        tokens.append(seen[-1].argmax(-1)[:, None])
    return np.concatenate(tokens, axis=1), np.stack(seen, axis=1)


@pytest.mark.parametrize("name", ["falcon-7b-layout", "bloom-6-heads"])
def test_kv_cache_decoding_matches_full_forward_and_transformers(tiny, name):
    model, path = tiny[name]
    cfg, params = _load(name, path)
    prompt = np.random.default_rng(1).integers(0, VOCAB, (2, 5))
    steps = 8
    seq, cached = _greedy_with_cache(cfg, params, prompt, steps)
    full_in = seq[:, :-1]  # prompt + the 8 fed tokens
    t = full_in.shape[1]
    full, _ = _fwd(cfg)(params, jnp.asarray(full_in), jnp.broadcast_to(jnp.arange(t), full_in.shape),
                      causal_mask(jnp.ones(full_in.shape, bool)))
    full = np.asarray(full)[:, prompt.shape[1] - 1:]
    assert cached.shape == full.shape == (2, steps + 1, VOCAB)
    assert np.abs(cached - full).max() <= 1e-4
    with torch.no_grad():
        hf = model.generate(torch.tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                            max_new_tokens=steps, do_sample=False, pad_token_id=0)
    np.testing.assert_array_equal(seq[:, :prompt.shape[1] + steps], hf.numpy())


@pytest.mark.parametrize("name", ["falcon-7b-layout", "bloom-6-heads"])
def test_bfloat16_runs_close_to_float32(tiny, name):
    model, path = tiny[name]
    cfg, params = _load(name, path, dtype="bfloat16")
    assert params["embed"].dtype == jnp.bfloat16 and params["layers"]["wq"].dtype == jnp.bfloat16
    tokens, valid, positions = _padded_batch("right")
    ref = _hf_logits(model, tokens, valid)
    got, _ = _fwd(cfg)(params, jnp.asarray(tokens), jnp.asarray(positions), causal_mask(jnp.asarray(valid)))
    got = np.asarray(got)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    # bfloat16 keeps ~3 significant digits: a few hundredths on logits of a few units.
    assert np.abs(got - ref)[valid].max() <= 0.1 * np.abs(ref[valid]).max()


@pytest.mark.parametrize("heads", [1, 2, 6, 12, 32, 71, 112])
def test_alibi_slopes_match_transformers(heads):
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    ref = _get_alibi_slopes(heads, torch.device("cpu")).numpy()
    np.testing.assert_allclose(np.asarray(alibi_slopes(heads)), ref, rtol=1e-6)


# ----------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("mod, cfg, words", [
    (falcon, {"model_type": "falcon", "alibi": True}, "alibi=true"),
    (falcon, {"model_type": "falcon", "new_decoder_architecture": True}, "new_decoder_architecture"),
    (falcon, {"model_type": "RefinedWeb", "n_head_kv": 8}, "new_decoder_architecture"),
    (falcon, {"model_type": "falcon", "activation": "relu"}, "activation 'relu'"),
    (falcon, {"model_type": "falcon", "rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "RoPE scaling"),
    (falcon, {"model_type": "llama"}, "not a Falcon model"),
    (bloom, {"model_type": "bloom", "apply_residual_connection_post_layernorm": True},
     "apply_residual_connection_post_layernorm"),
    (bloom, {"model_type": "bloom", "hidden_size": 50, "n_head": 6}, "not divisible"),
])
def test_unsupported_configs_give_one_line_input_error(mod, cfg, words):
    with pytest.raises(InputError) as e:
        mod.config_from_hf(cfg)
    msg = str(e.value)
    assert words in msg and "\n" not in msg and msg.startswith("config.json: ")


def test_loader_names_the_directory_of_an_unsupported_falcon(tiny, tmp_path):
    _, path = tiny["falcon-7b-layout"]
    hf_config = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(hf_config, alibi=True)))
    (tmp_path / "model.safetensors").symlink_to(path / "model.safetensors")
    with pytest.raises(InputError) as e:
        checkpoints.load_model(tmp_path)
    assert str(tmp_path) in str(e.value) and "alibi=true" in str(e.value) and "\n" not in str(e.value)


def test_bad_tensors_give_one_line_input_error(tiny):
    _, path = tiny["bloom-6-heads"]
    cfg = bloom.config_from_hf(json.loads((path / "config.json").read_text()))
    tensors = load_file(str(path / "model.safetensors"))
    name = "transformer.h.1.self_attention.query_key_value.bias"

    def _params(cfg, tensors):
        return hf_weights.params_from_hf(cfg, bloom.weight_map(cfg), tensors)

    missing = {k: v for k, v in tensors.items() if k != name}
    with pytest.raises(InputError, match=r"missing tensor 'h\.1\.self_attention\.query_key_value\.bias'"):
        _params(cfg, missing)
    wrong = dict(tensors, **{name: tensors[name][:-1]})
    with pytest.raises(InputError, match=r"shape mismatch for h\.1\.self_attention\.query_key_value\.bias: "
                                         r"checkpoint has \(143,\), config expects \(144,\)"):
        _params(cfg, wrong)
    with pytest.raises(InputError, match=r"unexpected tensor\(s\) h\.2\.input_layernorm\.weight"):
        _params(cfg, dict(tensors, **{"transformer.h.2.input_layernorm.weight": tensors[
            "transformer.h.1.input_layernorm.weight"]}))
    # The BigScience files have no "transformer." prefix: both spellings load the same parameters.
    bare = _params(cfg, {k.removeprefix("transformer."): v for k, v in tensors.items()})
    prefixed = _params(cfg, tensors)
    assert bare.keys() == prefixed.keys()
    assert all(np.array_equal(bare[k], prefixed[k]) for k in bare)


def test_falcon_multi_query_split_follows_hf_split_heads():
    """Hand-built fused rows [q0, q1, q2, k, v] x head_dim land in the right heads."""
    h, d, e = 3, 2, 4
    rows = np.arange((h + 2) * d * e, dtype=np.float32).reshape((h + 2) * d, e)
    wq, wk, wv = falcon.split_fused_qkv(rows, h, 1, d)
    assert wq.shape == (e, h, d) and wk.shape == wv.shape == (e, 1, d)
    np.testing.assert_array_equal(wq[:, 2, 1], rows[2 * d + 1])  # query head 2, dim 1
    np.testing.assert_array_equal(wk[:, 0, 0], rows[h * d])
    np.testing.assert_array_equal(wv[:, 0, 1], rows[(h + 1) * d + 1])
    assert math.prod(wq.shape) + 2 * math.prod(wk.shape) == rows.size


def test_falcon_early_refinedwebmodel_config_reads_like_the_transformers_one(tiny):
    """Falcon-7B's first config.json (model_type RefinedWebModel, n_embed/n_head/n_layer keys)."""
    _, path = tiny["falcon-7b-layout"]
    modern = falcon.config_from_hf(json.loads((path / "config.json").read_text()))
    early = falcon.config_from_hf({
        "model_type": "RefinedWebModel", "n_embed": 64, "n_head": 4, "n_layer": 2, "vocab_size": VOCAB,
        "multi_query": True, "parallel_attn": True, "bias": False, "alibi": False,
        "apply_residual_connection_post_layernorm": False, "layer_norm_epsilon": 1e-5})
    assert early == modern
    assert (modern.num_kv_heads, modern.parallel_block, modern.tie_embeddings) == (1, True, True)


@pytest.mark.parametrize("name", ["falcon-7b-layout", "bloom-6-heads"])
def test_packed_row_with_tree_mask_equals_separate_rows(tiny, name):
    """[prompt, option 1, option 2] in one row (each option sees the prompt and itself, positions
    restart after the prompt) gives the logits of the two rows [prompt, option i]: the property
    packed scoring needs, for ALiBi as well as rotary positions."""
    _, path = tiny[name]
    cfg, params = _load(name, path)
    rng = np.random.default_rng(2)
    prompt, o1, o2 = (rng.integers(0, VOCAB, n) for n in (5, 3, 2))
    n = len(prompt)
    tokens = np.concatenate([prompt, o1, o2])[None]
    branch = np.array([0] * n + [1] * len(o1) + [2] * len(o2))
    positions = np.concatenate([np.arange(n), n + np.arange(len(o1)), n + np.arange(len(o2))])[None]
    idx = np.arange(tokens.shape[1])
    mask = (idx[None, :] <= idx[:, None]) & ((branch[None, :] == 0) | (branch[None, :] == branch[:, None]))
    packed, _ = _fwd(cfg)(params, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask[None]))
    packed = np.asarray(packed)[0]
    rows = np.zeros((2, n + len(o1)), np.int64)  # the two separate rows as one right-padded batch
    rows[0], rows[1, :n + len(o2)] = np.concatenate([prompt, o1]), np.concatenate([prompt, o2])
    valid = np.arange(rows.shape[1])[None] < np.array([[n + len(o1)], [n + len(o2)]])
    alone, _ = _fwd(cfg)(params, jnp.asarray(rows), jnp.broadcast_to(jnp.arange(rows.shape[1]), rows.shape),
                       causal_mask(jnp.asarray(valid)))
    alone = np.asarray(alone)
    np.testing.assert_allclose(packed[:n], alone[0, :n], atol=1e-5)
    np.testing.assert_allclose(packed[branch == 1], alone[0, n:], atol=1e-5)
    np.testing.assert_allclose(packed[branch == 2], alone[1, n:n + len(o2)], atol=1e-5)
