"""Llama / Mistral / Qwen2 loaders against transformers' PyTorch models on tiny random checkpoints.

Each checkpoint is built by transformers, written with save_pretrained (safetensors, the same
files a real checkpoint has) and read back by our loader; logits must match transformers on a
right-padded batch, and cached decoding must match the full forward pass.
"""

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpers import randomize_torch  # noqa: E402
from valueprobe_jax.models.checkpoints import flat_params, load_model  # noqa: E402
from valueprobe_jax.models import KVCache, causal_mask, forward  # noqa: E402
from valueprobe_jax.models.llama import config_from_hf  # noqa: E402

VOCAB = 251  # not a power of two
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256,
              rms_norm_eps=1e-5)
CONFIGS = {
    # Llama 3.1 frequency scaling; a small original length so every regime (kept, smoothed,
    # divided by factor) occurs among the 8 frequencies of head_dim 16.
    "llama3": lambda: transformers.LlamaConfig(
        **COMMON, rope_theta=500000.0, rope_scaling=dict(
            rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=64)),
    # head_dim given explicitly and != hidden / heads, as Mistral allows.
    "mistral": lambda: transformers.MistralConfig(**COMMON, head_dim=32, sliding_window=None,
                                                  rope_theta=1e6),
    "qwen2_untied": lambda: transformers.Qwen2Config(**COMMON, tie_word_embeddings=False),
    "qwen2_tied": lambda: transformers.Qwen2Config(**COMMON, tie_word_embeddings=True),
}
LENGTHS = [12, 9, 5]  # right padding to 12


@functools.lru_cache(maxsize=None)
def _checkpoint(kind: str, tmp_root: str):
    cfg = CONFIGS[kind]()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    randomize_torch(model, len(kind), std=0.15, norm_std=0.2)
    model.eval()
    path = f"{tmp_root}/{kind}"
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("llama_ckpts"))


def _batch(seed: int = 1):
    rng = np.random.default_rng(seed)
    t = max(LENGTHS)
    tokens = rng.integers(1, VOCAB, size=(len(LENGTHS), t))
    valid = np.arange(t)[None, :] < np.asarray(LENGTHS)[:, None]
    return np.where(valid, tokens, 0), valid


def _ours(loaded, tokens, valid):
    b, t = tokens.shape
    pos = jnp.broadcast_to(jnp.arange(t), (b, t))
    logits, _ = forward(loaded.cfg, loaded.params, jnp.asarray(tokens), pos,
                        causal_mask(jnp.asarray(valid)))
    return np.asarray(logits)


def _theirs(model, tokens, valid):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(valid.astype(np.int64)))
    return out.logits.float().numpy()


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_logits_match_transformers_on_padded_batch(kind, tmp_root):
    model, path = _checkpoint(kind, tmp_root)
    loaded = load_model(path)
    assert loaded.cfg.vocab_size == VOCAB and loaded.tokenizer is None and loaded.spec is None
    tokens, valid = _batch()
    ours, theirs = _ours(loaded, tokens, valid), _theirs(model, tokens, valid)
    diff = np.abs(ours - theirs)[valid].max()
    assert np.abs(theirs[valid]).max() > 1.0  # the comparison is not between near-zero logits
    assert diff <= 1e-4, f"{kind}: max |logit diff| {diff:.2e}"


def test_config_switches_follow_config_json(tmp_root):
    cfgs = {k: load_model(_checkpoint(k, tmp_root)[1]).cfg for k in CONFIGS}
    assert cfgs["llama3"].rope_scaling is not None and cfgs["llama3"].rope_theta == 500000.0
    assert cfgs["mistral"].head_dim == 32 and not cfgs["mistral"].qkv_bias
    assert cfgs["qwen2_untied"].qkv_bias and not cfgs["qwen2_untied"].out_bias
    assert not cfgs["qwen2_untied"].tie_embeddings and cfgs["qwen2_tied"].tie_embeddings


def test_legacy_rope_keys_give_the_same_config():
    scaling = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=8192)
    base = dict(model_type="llama", vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=96)
    new = config_from_hf({**base, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5,
                                                      **scaling}})
    old = config_from_hf({**base, "rope_theta": 5e5, "rope_scaling": {"rope_type": "llama3",
                                                                      **scaling}})
    older = config_from_hf({**base, "rope_theta": 5e5, "rope_scaling": {"type": "llama3", **scaling}})
    assert new == old == older and new.rope_scaling.factor == 8.0 and new.rope_theta == 5e5
    plain = config_from_hf({**base, "rope_theta": 1e6, "rope_scaling": None})
    assert plain.rope_scaling is None and plain.rope_theta == 1e6


def test_cached_decoding_matches_full_forward(tmp_root):
    """Greedy-decode 8 tokens per row with the KV cache (rows of different lengths share cache
    slots; the mask skips each row's padding), then re-run the full sequences without a cache."""
    loaded = load_model(_checkpoint("llama3", tmp_root)[1])
    cfg, params = loaded.cfg, loaded.params
    tokens, valid = _batch(seed=2)
    b, p = tokens.shape
    steps, cap = 8, p + 8
    lengths = np.asarray(LENGTHS)
    fwd = jax.jit(functools.partial(forward, cfg))

    slot_valid = np.zeros((b, cap), bool)
    slot_valid[:, :p] = valid
    mask = np.zeros((b, p, cap), bool)
    mask[:, :, :p] = np.asarray(causal_mask(jnp.asarray(valid)))
    logits, cache = fwd(params, jnp.asarray(tokens), jnp.broadcast_to(jnp.arange(p), (b, p)),
                        jnp.asarray(mask), cache=KVCache.zeros(cfg, b, cap), cache_index=0)
    step_logits = [np.asarray(logits)[np.arange(b), lengths - 1]]
    generated = []
    for i in range(steps):
        nxt = step_logits[-1].argmax(-1)
        generated.append(nxt)
        slot_valid[:, p + i] = True
        logits, cache = fwd(params, jnp.asarray(nxt[:, None]), jnp.asarray((lengths + i)[:, None]),
                            jnp.asarray(slot_valid[:, None, :]), cache=cache, cache_index=p + i)
        step_logits.append(np.asarray(logits)[:, 0])
    generated = np.stack(generated, 1)  # [B, 8]

    full_len = p + steps
    full = np.zeros((b, full_len), np.int64)
    for r in range(b):
        full[r, :lengths[r]] = tokens[r, :lengths[r]]
        full[r, lengths[r]:lengths[r] + steps] = generated[r]
    full_valid = np.arange(full_len)[None] < (lengths + steps)[:, None]
    ref = _ours(loaded, full, full_valid)
    for i in range(steps + 1):  # logits predicting generated token i (and one more)
        want = ref[np.arange(b), lengths - 1 + i]
        np.testing.assert_allclose(step_logits[i], want, atol=2e-5, rtol=0)


def test_bfloat16_roughly_agrees(tmp_root):
    model, path = _checkpoint("qwen2_untied", tmp_root)
    loaded = load_model(path, dtype="bfloat16")
    assert loaded.params["layers"]["wq"].dtype == jnp.bfloat16
    tokens, valid = _batch()
    ours, theirs = _ours(loaded, tokens, valid)[valid], _theirs(model, tokens, valid)[valid]
    assert ours.dtype == np.float32
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= 0.05 * scale
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.9


def test_sharded_checkpoint_loads_the_same(tmp_root):
    model, path = _checkpoint("qwen2_untied", tmp_root)
    sharded = f"{tmp_root}/qwen2_sharded"
    model.save_pretrained(sharded, max_shard_size="60KB")
    import os

    files = os.listdir(sharded)
    assert "model.safetensors.index.json" in files
    assert sum(f.endswith(".safetensors") for f in files) > 1
    a = flat_params(load_model(path).params)
    b = flat_params(load_model(sharded).params)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_bfloat16_checkpoint_reads_exactly(tmp_root):
    """Real checkpoints are stored in bfloat16 (numpy has no such dtype): values survive exactly."""
    model, _ = _checkpoint("qwen2_untied", tmp_root)
    path = f"{tmp_root}/qwen2_bf16"
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(path)  # the fixture model is shared
    from safetensors import safe_open

    with safe_open(f"{path}/model.safetensors", framework="numpy") as f:
        assert f.get_slice("model.layers.1.mlp.down_proj.weight").get_dtype() == "BF16"
    with torch.no_grad():
        want = model.model.layers[1].mlp.down_proj.weight.to(torch.bfloat16).float().numpy().T
        bias = model.model.layers[0].self_attn.k_proj.bias.to(torch.bfloat16).float().numpy()
    for dtype in ("float32", "bfloat16"):
        p = load_model(path, dtype=dtype).params
        assert p["layers"]["w_down"].dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(p["layers"]["w_down"][1], np.float32), want)
        np.testing.assert_array_equal(np.asarray(p["layers"]["bk"][0], np.float32).ravel(), bias)
