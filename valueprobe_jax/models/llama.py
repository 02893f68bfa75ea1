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
from valueprobe_jax.models.hf_weights import Rule, WeightMap, head_rules

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


def weight_map(cfg: ModelConfig) -> WeightMap:
    """Our parameters from HF names (``model.layers.N.self_attn.q_proj.weight`` ...): nn.Linear
    stores [out, in]; we keep [in, heads, head_dim] / [heads, head_dim, out], stacked over layers."""
    e, h, kv, d, m, v = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                         cfg.intermediate_size, cfg.vocab_size)
    L = "model.layers.{i}."

    def heads_in(n: int) -> Callable[[np.ndarray], np.ndarray]:  # [n*d, e] -> [e, n, d]
        return lambda w: w.T.reshape(e, n, d)

    def heads_bias(n: int) -> Callable[[np.ndarray], np.ndarray]:  # [n*d] -> [n, d]
        return lambda b: b.reshape(n, d)

    rules = [
        Rule("embed", "model.embed_tokens.weight", (v, e)),
        Rule("final_norm_scale", "model.norm.weight", (e,)),
        Rule("layers/attn_norm_scale", L + "input_layernorm.weight", (e,)),
        Rule("layers/mlp_norm_scale", L + "post_attention_layernorm.weight", (e,)),
        Rule("layers/wq", L + "self_attn.q_proj.weight", (h * d, e), heads_in(h)),
        Rule("layers/wk", L + "self_attn.k_proj.weight", (kv * d, e), heads_in(kv)),
        Rule("layers/wv", L + "self_attn.v_proj.weight", (kv * d, e), heads_in(kv)),
        Rule("layers/wo", L + "self_attn.o_proj.weight", (e, h * d),
             lambda w: w.T.reshape(h, d, e)),
        Rule("layers/w_gate", L + "mlp.gate_proj.weight", (m, e), np.transpose),
        Rule("layers/w_up", L + "mlp.up_proj.weight", (m, e), np.transpose),
        Rule("layers/w_down", L + "mlp.down_proj.weight", (e, m), np.transpose),
    ]
    if cfg.qkv_bias:
        rules += [Rule("layers/bq", L + "self_attn.q_proj.bias", (h * d,), heads_bias(h)),
                  Rule("layers/bk", L + "self_attn.k_proj.bias", (kv * d,), heads_bias(kv)),
                  Rule("layers/bv", L + "self_attn.v_proj.bias", (kv * d,), heads_bias(kv))]
    if cfg.out_bias:
        rules.append(Rule("layers/bo", L + "self_attn.o_proj.bias", (e,)))
    return WeightMap("llama", tuple(rules + head_rules(cfg)))
