"""Bloom / Bloomz as a switch set of the shared decoder.

Bloom: ALiBi instead of position embeddings (head slopes including the interleave for head counts
that are not a power of two), LayerNorm right after the word embedding, pre-norm blocks with
``input_layernorm`` and ``post_attention_layernorm``, a fused ``query_key_value`` projection with
bias laid out per head as [heads, 3 (q, k, v), head_dim], ``dense`` output projection with bias,
a 4x MLP with biases and the tanh GELU, ``ln_f`` and an LM head tied to the embeddings.

ALiBi in transformers adds ``slope * key_position`` (positions counted over the attention mask)
to ``q.k / sqrt(head_dim)``; ``layers.py`` adds ``slope * (key_pos - query_pos)``, which differs by
a constant per query row and so gives the same softmax. Callers must pass positions counted over
valid tokens (``cumsum(valid) - 1``), as transformers derives them from the mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.falcon import split_fused_qkv
from valueprobe_jax.models.hf_weights import Rule, WeightMap, head_rules

_WHERE = "config.json"


def _first(c: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if c.get(k) is not None:
            return c[k]
    return default


def config_from_hf(hf_config: Mapping[str, Any], dtype: str = "float32") -> ModelConfig:
    """Bloom ``config.json`` (as a dict) -> ``ModelConfig``; unsupported layouts raise InputError."""
    c = hf_config
    mt = c.get("model_type", "bloom")
    if mt != "bloom":
        raise InputError(f"{_WHERE}: model_type {mt!r} is not a Bloom model")
    if c.get("apply_residual_connection_post_layernorm"):
        raise InputError(f"{_WHERE}: Bloom with apply_residual_connection_post_layernorm=true "
                         "is not supported")
    hidden = int(_first(c, "hidden_size", "n_embed", default=64))
    heads = int(_first(c, "n_head", "num_attention_heads", default=8))
    if hidden % heads:
        raise InputError(f"{_WHERE}: hidden_size {hidden} is not divisible by n_head {heads}")
    return ModelConfig(
        family="bloom",
        vocab_size=int(_first(c, "vocab_size", default=250880)),
        hidden_size=hidden,
        num_layers=int(_first(c, "n_layer", "num_hidden_layers", default=2)),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        intermediate_size=4 * hidden,  # fixed in BloomMLP
        norm="layer",
        norm_eps=float(_first(c, "layer_norm_epsilon", default=1e-5)),
        position="alibi",
        qkv_bias=True,
        out_bias=True,
        mlp="plain",
        mlp_bias=True,
        activation="gelu_tanh",  # bloom_gelu_forward: tanh approximation
        parallel_block=False,
        embed_norm=True,
        tie_embeddings=bool(_first(c, "tie_word_embeddings", default=True)),
        # ALiBi has no table; 2048 is the training length of the BigScience models.
        max_position_embeddings=int(_first(c, "max_position_embeddings", "seq_length", default=2048)),
        dtype=dtype,
    )


def weight_map(cfg: ModelConfig) -> WeightMap:
    """Our parameters from HF Bloom names (with or without ``transformer.``, as the BigScience
    files have them)."""
    e, h, d, m, v = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size, cfg.vocab_size
    L, fused = "h.{i}.", "h.{i}.self_attention.query_key_value."

    def qkv(part: int) -> Callable[[np.ndarray], np.ndarray]:  # one of q, k, v of the fused tensor
        return lambda w: split_fused_qkv(w, h, h, d)[part]

    rules = [Rule("layers/attn_norm_scale", L + "input_layernorm.weight", (e,)),
             Rule("layers/attn_norm_bias", L + "input_layernorm.bias", (e,)),
             Rule("layers/mlp_norm_scale", L + "post_attention_layernorm.weight", (e,)),
             Rule("layers/mlp_norm_bias", L + "post_attention_layernorm.bias", (e,))]
    rules += [Rule(f"layers/{name}", fused + "weight", (3 * h * d, e), qkv(part))
              for part, name in enumerate(("wq", "wk", "wv"))]
    rules += [Rule(f"layers/{name}", fused + "bias", (3 * h * d,), qkv(part))
              for part, name in enumerate(("bq", "bk", "bv"))]
    rules += [Rule("layers/wo", L + "self_attention.dense.weight", (e, h * d),
                   lambda w: w.T.reshape(h, d, e)),
              Rule("layers/bo", L + "self_attention.dense.bias", (e,)),
              Rule("layers/w_up", L + "mlp.dense_h_to_4h.weight", (m, e), np.transpose),
              Rule("layers/b_up", L + "mlp.dense_h_to_4h.bias", (m,)),
              Rule("layers/w_down", L + "mlp.dense_4h_to_h.weight", (e, m), np.transpose),
              Rule("layers/b_down", L + "mlp.dense_4h_to_h.bias", (e,)),
              Rule("embed", "word_embeddings.weight", (v, e)),
              Rule("embed_norm_scale", "word_embeddings_layernorm.weight", (e,)),
              Rule("embed_norm_bias", "word_embeddings_layernorm.bias", (e,)),
              Rule("final_norm_scale", "ln_f.weight", (e,)),
              Rule("final_norm_bias", "ln_f.bias", (e,))]
    return WeightMap("bloom", tuple(rules + head_rules(cfg)), optional_prefix="transformer.")
