"""Falcon (the Falcon-7B layout) as a switch set of the shared decoder.

Falcon-7B: rotary positions, LayerNorm, no biases, one ``input_layernorm`` feeding attention and
MLP in parallel, multi-query attention (one key/value head) with a fused ``query_key_value``
projection, plain exact-GELU MLP of 4x width, ``ln_f``, LM head tied to the word embeddings.
This module maps a Hugging Face ``config.json`` and its tensors onto ``ModelConfig`` and the flat
parameter names of ``layers.py``; the compute lives in ``layers.py``.

Also accepted because they are the same compute: ``multi_query=false`` (full multi-head, fused
weights laid out per head as [heads, 3, head_dim]), ``parallel_attn=false`` (sequential block with
``post_attention_layernorm``) and ``bias=true``. Rejected: ALiBi Falcons (falcon-rw) and the
``new_decoder_architecture`` of Falcon-40B/180B.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.hf_weights import Rule, WeightMap, head_rules

MODEL_TYPES = ("falcon", "RefinedWebModel", "RefinedWeb")
# transformers' activation names -> ours (the tanh forms are one function with equal constants).
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_fast": "gelu_tanh"}
_WHERE = "config.json"


def _first(c: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if c.get(k) is not None:
            return c[k]
    return default


def _rope_theta(c: Mapping[str, Any]) -> float:
    """Plain RoPE only: transformers 5 writes ``rope_parameters``, older files ``rope_theta``."""
    rp = c.get("rope_parameters") or {}
    kind = rp.get("rope_type", rp.get("type", "default"))
    if kind != "default" or c.get("rope_scaling"):
        raise InputError(f"{_WHERE}: Falcon with RoPE scaling {kind if kind != 'default' else c['rope_scaling']!r} "
                         "is not supported (plain rotary only)")
    return float(_first(rp, "rope_theta", default=_first(c, "rope_theta", default=10000.0)))


def config_from_hf(hf_config: Mapping[str, Any], dtype: str = "float32") -> ModelConfig:
    """Falcon ``config.json`` (as a dict) -> ``ModelConfig``; unsupported layouts raise InputError.

    Defaults are FalconConfig's, so the short configs of early checkpoints read the same way.
    """
    c = hf_config
    mt = c.get("model_type", "falcon")
    if mt not in MODEL_TYPES:
        raise InputError(f"{_WHERE}: model_type {mt!r} is not a Falcon model")
    if c.get("alibi"):
        raise InputError(f"{_WHERE}: Falcon with alibi=true (falcon-rw) is not supported; "
                         "only the rotary layout of Falcon-7B")
    # Pre-transformers Falcon-40B configs ("RefinedWeb", n_head_kv) are the new architecture too.
    if c.get("new_decoder_architecture") or mt == "RefinedWeb" or c.get("n_head_kv") is not None:
        raise InputError(f"{_WHERE}: Falcon with new_decoder_architecture=true (Falcon-40B/180B) "
                         "is not supported; only the Falcon-7B layout")
    hidden = int(_first(c, "hidden_size", "n_embed", default=4544))
    heads = int(_first(c, "num_attention_heads", "n_head", default=71))
    layers = int(_first(c, "num_hidden_layers", "n_layer", default=32))
    if hidden % heads:
        raise InputError(f"{_WHERE}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    multi_query = bool(_first(c, "multi_query", default=True))
    # Without multi_query, HF splits the fused projection into `heads` key/value heads.
    kv_heads = 1 if multi_query else heads
    if not multi_query and int(_first(c, "num_kv_heads", default=heads)) != heads:
        raise InputError(f"{_WHERE}: num_kv_heads {c['num_kv_heads']} != num_attention_heads {heads} "
                         "needs new_decoder_architecture, which is not supported")
    act = _first(c, "activation", default="gelu")
    if act not in _ACTIVATIONS:
        raise InputError(f"{_WHERE}: Falcon activation {act!r} is not supported "
                         f"(supported: {', '.join(sorted(_ACTIVATIONS))})")
    bias = bool(_first(c, "bias", default=False))
    return ModelConfig(
        family="falcon",
        vocab_size=int(_first(c, "vocab_size", default=65024)),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=hidden // heads,
        intermediate_size=int(_first(c, "ffn_hidden_size", default=4 * hidden)),
        norm="layer",
        norm_eps=float(_first(c, "layer_norm_epsilon", default=1e-5)),
        position="rope",
        rope_theta=_rope_theta(c),
        qkv_bias=bias,
        out_bias=bias,
        mlp="plain",
        mlp_bias=bias,
        activation=_ACTIVATIONS[act],
        parallel_block=bool(_first(c, "parallel_attn", default=True)),
        embed_norm=False,
        tie_embeddings=bool(_first(c, "tie_word_embeddings", default=True)),
        max_position_embeddings=int(_first(c, "max_position_embeddings", default=2048)),
        dtype=dtype,
    )


def split_fused_qkv(w: np.ndarray, heads: int, kv_heads: int, head_dim: int):
    """Fused ``query_key_value`` weight [out, E] (or bias [out]) -> q, k, v as [E?, n, head_dim].

    Multi-query (kv_heads=1): out = [q heads..., k, v] x head_dim (HF ``_split_heads``).
    Otherwise out is laid out per head: [heads, 3 (q, k, v), head_dim].
    """
    tail = w.shape[1:]
    if kv_heads == 1:
        f = w.reshape(heads + 2, head_dim, *tail)
        q, k, v = f[:heads], f[heads:heads + 1], f[heads + 1:]
    else:
        f = w.reshape(heads, 3, head_dim, *tail)
        q, k, v = f[:, 0], f[:, 1], f[:, 2]
    if tail:  # weight: [n, D, E] -> [E, n, D]
        q, k, v = (x.transpose(2, 0, 1) for x in (q, k, v))
    return q, k, v


def weight_map(cfg: ModelConfig) -> WeightMap:
    """Our parameters from HF Falcon names (with or without ``transformer.``)."""
    e, h, kv, d, m, v = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                         cfg.intermediate_size, cfg.vocab_size)
    L, qkv_out = "h.{i}.", (h + 2 * kv) * d

    def qkv(part: int) -> Callable[[np.ndarray], np.ndarray]:  # one of q, k, v of the fused tensor
        return lambda w: split_fused_qkv(w, h, kv, d)[part]

    rules = [Rule("layers/attn_norm_scale", L + "input_layernorm.weight", (e,)),
             Rule("layers/attn_norm_bias", L + "input_layernorm.bias", (e,))]
    if not cfg.parallel_block:
        rules += [Rule("layers/mlp_norm_scale", L + "post_attention_layernorm.weight", (e,)),
                  Rule("layers/mlp_norm_bias", L + "post_attention_layernorm.bias", (e,))]
    fused = L + "self_attention.query_key_value."
    rules += [Rule(f"layers/{name}", fused + "weight", (qkv_out, e), qkv(part))
              for part, name in enumerate(("wq", "wk", "wv"))]
    rules += [Rule("layers/wo", L + "self_attention.dense.weight", (e, h * d),
                   lambda w: w.T.reshape(h, d, e)),
              Rule("layers/w_up", L + "mlp.dense_h_to_4h.weight", (m, e), np.transpose),
              Rule("layers/w_down", L + "mlp.dense_4h_to_h.weight", (e, m), np.transpose)]
    if cfg.qkv_bias:
        rules += [Rule(f"layers/{name}", fused + "bias", (qkv_out,), qkv(part))
                  for part, name in enumerate(("bq", "bk", "bv"))]
    if cfg.out_bias:
        rules.append(Rule("layers/bo", L + "self_attention.dense.bias", (e,)))
    if cfg.mlp_bias:
        rules += [Rule("layers/b_up", L + "mlp.dense_h_to_4h.bias", (m,)),
                  Rule("layers/b_down", L + "mlp.dense_4h_to_h.bias", (e,))]
    rules += [Rule("embed", "word_embeddings.weight", (v, e)),
              Rule("final_norm_scale", "ln_f.weight", (e,)),
              Rule("final_norm_bias", "ln_f.bias", (e,))]
    return WeightMap("falcon", tuple(rules + head_rules(cfg)), optional_prefix="transformer.")
