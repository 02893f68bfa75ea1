"""Hugging Face Llama / Mistral / Qwen2 checkpoints -> our decoder config and parameter tree.

The three architectures are one decoder (RMSNorm, rotary attention with grouped-query heads,
SwiGLU MLP); they differ in switches this module reads from ``config.json``: Llama 3.1's
"llama3" RoPE frequency scaling, Qwen2's q/k/v biases, tied or untied embeddings. Weights are
renamed, transposed to ``x @ W`` layout, split into heads and stacked over layers (see the
parameter table in ``layers.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig, RopeScaling

MODEL_TYPES = ("llama", "mistral", "qwen2")


def _rope(hf: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
    """RoPE base and scaling from either transformers-5 ``rope_parameters`` or the legacy
    ``rope_theta`` / ``rope_scaling`` keys."""
    params = dict(hf.get("rope_parameters") or {})
    legacy = dict(hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    scaling = {**legacy, **params}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return float(theta), None
    if kind != "llama3":
        raise InputError(f"config.json: unsupported RoPE scaling type {kind!r} (supported: llama3)")
    try:
        sc = RopeScaling(factor=float(scaling["factor"]),
                         low_freq_factor=float(scaling["low_freq_factor"]),
                         high_freq_factor=float(scaling["high_freq_factor"]),
                         original_max_position_embeddings=int(
                             scaling["original_max_position_embeddings"]))
    except KeyError as e:
        raise InputError(f"config.json: llama3 RoPE scaling lacks {e.args[0]!r}") from None
    return float(theta), sc


def config_from_hf(hf_config: Mapping[str, Any], dtype: str = "float32") -> ModelConfig:
    """``config.json`` of a Llama, Mistral or Qwen2 checkpoint -> ModelConfig."""
    model_type = hf_config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise InputError(f"config.json: model_type {model_type!r} is not one of {MODEL_TYPES}")
    try:
        hidden = int(hf_config["hidden_size"])
        heads = int(hf_config["num_attention_heads"])
        layers = int(hf_config["num_hidden_layers"])
        vocab = int(hf_config["vocab_size"])
        inter = int(hf_config["intermediate_size"])
    except KeyError as e:
        raise InputError(f"config.json: missing key {e.args[0]!r}") from None
    kv_heads = int(hf_config.get("num_key_value_heads") or heads)
    head_dim = int(hf_config.get("head_dim") or hidden // heads)
    act = hf_config.get("hidden_act", "silu")
    if act != "silu":
        raise InputError(f"config.json: hidden_act {act!r} is not supported for {model_type} "
                         "(only silu)")
    if heads % kv_heads:
        raise InputError(f"config.json: {heads} attention heads do not divide into "
                         f"{kv_heads} key/value heads")
    if hf_config.get("mlp_bias"):
        raise InputError("config.json: mlp_bias=true is not supported (no gate-projection bias)")
    theta, scaling = _rope(hf_config)
    max_pos = int(hf_config.get("max_position_embeddings", 8192))
    # Mistral/Qwen2 sliding-window attention equals full attention up to the window length, so a
    # window only lowers the usable context (the probes use short prompts).
    window = hf_config.get("sliding_window")
    if window and (model_type == "mistral" or hf_config.get("use_sliding_window")):
        max_pos = min(max_pos, int(window))
    if model_type == "qwen2":
        qkv_bias, out_bias = True, False  # Qwen2 hard-codes q/k/v biases, none on o_proj
    else:
        qkv_bias = out_bias = bool(hf_config.get("attention_bias", False))
    return ModelConfig(
        family="llama", vocab_size=vocab, hidden_size=hidden, num_layers=layers,
        num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, intermediate_size=inter,
        norm="rms", norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)), position="rope",
        rope_theta=theta, rope_scaling=scaling, qkv_bias=qkv_bias, out_bias=out_bias,
        mlp="gated", activation="silu",
        tie_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
        max_position_embeddings=max_pos, dtype=dtype)


def _getter(tensors: Mapping[str, Any], dtype: Any,
            used: set[str]) -> Callable[[str, tuple[int, ...]], np.ndarray]:
    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        used.add(name)
        if name not in tensors:
            raise InputError(f"{name}: tensor missing from the checkpoint")
        t = np.asarray(tensors[name])
        if tuple(t.shape) != tuple(shape):
            raise InputError(f"{name}: tensor shape {tuple(t.shape)} does not match the "
                             f"config's {tuple(shape)}")
        return t.astype(dtype, copy=False)
    return get


def params_from_hf(cfg: ModelConfig, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF tensor names (``model.layers.N.self_attn.q_proj.weight`` ...) -> flat parameter dict
    (``layers/wq`` ... stacked over layers), cast to ``cfg.dtype``.

    ``tensors`` may be lazy (a mapping that reads on access); each tensor is read once.
    """
    e, h, kv, d, m, v, n = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                            cfg.intermediate_size, cfg.vocab_size, cfg.num_layers)
    used: set[str] = set()
    get = _getter(tensors, cfg.jnp_dtype, used)

    def stack(fn: Callable[[str], np.ndarray]) -> np.ndarray:
        return np.stack([fn(f"model.layers.{i}.") for i in range(n)])

    def heads_in(name: str, n_heads: int) -> np.ndarray:  # [n_heads*d, e] -> [L, e, n_heads, d]
        return stack(lambda p: get(p + name, (n_heads * d, e)).T.reshape(e, n_heads, d))

    def heads_bias(name: str, n_heads: int) -> np.ndarray:  # [n_heads*d] -> [L, n_heads, d]
        return stack(lambda p: get(p + name, (n_heads * d,)).reshape(n_heads, d))

    def linear(name: str, shape: tuple[int, int]) -> np.ndarray:  # [out, in] -> [L, in, out]
        return stack(lambda p: get(p + name, shape).T)

    # nn.Linear stores [out, in]; we keep [in, heads, head_dim] / [heads, head_dim, out].
    out: dict[str, np.ndarray] = {
        "embed": get("model.embed_tokens.weight", (v, e)),
        "final_norm_scale": get("model.norm.weight", (e,)),
        "layers/attn_norm_scale": stack(lambda p: get(p + "input_layernorm.weight", (e,))),
        "layers/mlp_norm_scale": stack(lambda p: get(p + "post_attention_layernorm.weight", (e,))),
        "layers/wq": heads_in("self_attn.q_proj.weight", h),
        "layers/wk": heads_in("self_attn.k_proj.weight", kv),
        "layers/wv": heads_in("self_attn.v_proj.weight", kv),
        "layers/wo": stack(lambda p: get(p + "self_attn.o_proj.weight", (e, h * d)).T
                           .reshape(h, d, e)),
        "layers/w_gate": linear("mlp.gate_proj.weight", (m, e)),
        "layers/w_up": linear("mlp.up_proj.weight", (m, e)),
        "layers/w_down": linear("mlp.down_proj.weight", (e, m)),
    }
    if cfg.qkv_bias:
        out["layers/bq"] = heads_bias("self_attn.q_proj.bias", h)
        out["layers/bk"] = heads_bias("self_attn.k_proj.bias", kv)
        out["layers/bv"] = heads_bias("self_attn.v_proj.bias", kv)
    if cfg.out_bias:
        out["layers/bo"] = stack(lambda p: get(p + "self_attn.o_proj.bias", (e,)))
    if not cfg.tie_embeddings:
        out["lm_head"] = get("lm_head.weight", (v, e)).T
    # Tolerated leftovers: RoPE buffers of old exports; a tied checkpoint that still stores the
    # head (transformers ignores it too). Anything else means config and weights disagree.
    extra = sorted(k for k in tensors if k not in used and not k.endswith("rotary_emb.inv_freq")
                   and not (cfg.tie_embeddings and k == "lm_head.weight"))
    if extra:
        shown = ", ".join(extra[:3]) + (f" (+{len(extra) - 3} more)" if len(extra) > 3 else "")
        raise InputError(f"{shown}: unexpected tensor(s) for the config's "
                         f"{n}-layer {'tied' if cfg.tie_embeddings else 'untied'} model")
    return {k: np.ascontiguousarray(a) for k, a in out.items()}
