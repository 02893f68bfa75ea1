"""The decoder forward pass shared by all families, as pure functions over a parameter tree.

Parameter tree (every layer tensor stacked on a leading ``layers`` axis so the blocks run under
``jax.lax.scan`` and compile time does not grow with depth)::

    embed            [vocab, embed]
    embed_norm_{scale,bias} [embed]                      (Bloom)
    layers/attn_norm_{scale,bias} [L, embed]             (bias only for LayerNorm)
    layers/wq [L, embed, heads, head_dim]   layers/bq [L, heads, head_dim]      (bias optional)
    layers/wk [L, embed, kv_heads, head_dim] layers/bk [L, kv_heads, head_dim]
    layers/wv [L, embed, kv_heads, head_dim] layers/bv [L, kv_heads, head_dim]
    layers/wo [L, heads, head_dim, embed]   layers/bo [L, embed]
    layers/mlp_norm_{scale,bias} [L, embed]              (absent for a parallel block)
    layers/w_gate [L, embed, mlp] (gated only)  layers/w_up [L, embed, mlp]  layers/w_down [L, mlp, embed]
    layers/b_up [L, mlp]  layers/b_down [L, embed]        (mlp_bias)
    final_norm_{scale,bias} [embed]
    lm_head [embed, vocab]                                (absent when embeddings are tied)

The attention mask is explicit, ``mask[b, t, s]`` = query t of row b may read key slot s, so one
code path serves padded batches, packed rows with a tree mask, prefill and cached decoding.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp

from valueprobe_jax.models.config import ModelConfig

Params = dict[str, Any]

# Logical axis names of every parameter (the sharding rules map these onto a device mesh).
LOGICAL_AXES: dict[str, tuple[str, ...]] = {
    "embed": ("vocab", "embed"),
    "embed_norm_scale": ("embed",),
    "embed_norm_bias": ("embed",),
    "final_norm_scale": ("embed",),
    "final_norm_bias": ("embed",),
    "lm_head": ("embed", "vocab"),
    "layers/attn_norm_scale": ("layers", "embed"),
    "layers/attn_norm_bias": ("layers", "embed"),
    "layers/mlp_norm_scale": ("layers", "embed"),
    "layers/mlp_norm_bias": ("layers", "embed"),
    "layers/wq": ("layers", "embed", "heads", "head_dim"),
    "layers/wk": ("layers", "embed", "kv_heads", "head_dim"),
    "layers/wv": ("layers", "embed", "kv_heads", "head_dim"),
    "layers/bq": ("layers", "heads", "head_dim"),
    "layers/bk": ("layers", "kv_heads", "head_dim"),
    "layers/bv": ("layers", "kv_heads", "head_dim"),
    "layers/wo": ("layers", "heads", "head_dim", "embed"),
    "layers/bo": ("layers", "embed"),
    "layers/w_gate": ("layers", "embed", "mlp"),
    "layers/w_up": ("layers", "embed", "mlp"),
    "layers/w_down": ("layers", "mlp", "embed"),
    "layers/b_up": ("layers", "mlp"),
    "layers/b_down": ("layers", "embed"),
}


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Flat name -> shape of every parameter this config has (the contract for loaders)."""
    e, h, kv, d, m, v, n = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                            cfg.intermediate_size, cfg.vocab_size, cfg.num_layers)
    s: dict[str, tuple[int, ...]] = {"embed": (v, e), "final_norm_scale": (e,)}
    s["layers/attn_norm_scale"] = (n, e)
    s["layers/wq"], s["layers/wk"], s["layers/wv"] = (n, e, h, d), (n, e, kv, d), (n, e, kv, d)
    s["layers/wo"] = (n, h, d, e)
    if cfg.qkv_bias:
        s["layers/bq"], s["layers/bk"], s["layers/bv"] = (n, h, d), (n, kv, d), (n, kv, d)
    if cfg.out_bias:
        s["layers/bo"] = (n, e)
    if not cfg.parallel_block:
        s["layers/mlp_norm_scale"] = (n, e)
    if cfg.mlp == "gated":
        s["layers/w_gate"] = (n, e, m)
    s["layers/w_up"], s["layers/w_down"] = (n, e, m), (n, m, e)
    if cfg.mlp_bias:
        s["layers/b_up"], s["layers/b_down"] = (n, m), (n, e)
    if cfg.norm == "layer":
        for k in [k for k in s if k.endswith("_norm_scale")]:
            s[k.replace("_scale", "_bias")] = s[k]
    if cfg.embed_norm:
        s["embed_norm_scale"] = s["embed_norm_bias"] = (e,)
    if not cfg.tie_embeddings:
        s["lm_head"] = (e, v)
    return s


class KVCache(NamedTuple):
    """Keys/values of every layer for ``capacity`` slots per row, plus each slot's position
    (ALiBi needs key positions; RoPE has them baked into the keys)."""

    k: jax.Array  # [L, B, S, kv_heads, head_dim]
    v: jax.Array  # [L, B, S, kv_heads, head_dim]
    pos: jax.Array  # [B, S] int32

    @classmethod
    def zeros(cls, cfg: ModelConfig, batch: int, capacity: int) -> "KVCache":
        shape = (cfg.num_layers, batch, capacity, cfg.num_kv_heads, cfg.head_dim)
        return cls(jnp.zeros(shape, cfg.jnp_dtype), jnp.zeros(shape, cfg.jnp_dtype),
                   jnp.zeros((batch, capacity), jnp.int32))


# ----------------------------------------------------------------------------- building blocks

def norm(x: jax.Array, scale: jax.Array, bias: jax.Array | None, kind: str, eps: float) -> jax.Array:
    """RMSNorm or LayerNorm computed in float32, returned in the input dtype."""
    xf = x.astype(jnp.float32)
    if kind == "rms":
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
        y = y.astype(x.dtype) * scale  # HF casts back before the weight multiply
        return y
    mu = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mu), axis=-1, keepdims=True)
    y = (xf - mu) * jax.lax.rsqrt(var + eps) * scale.astype(jnp.float32)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(x.dtype)


def activation(x: jax.Array, kind: str) -> jax.Array:
    if kind == "silu":
        return jax.nn.silu(x)
    if kind == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if kind == "gelu_tanh":
        return jax.nn.gelu(x, approximate=True)
    raise ValueError(f"unknown activation {kind!r}")


def rope_inv_freq(cfg: ModelConfig) -> jax.Array:
    """Inverse frequencies, with Llama 3.1's "llama3" scaling when configured."""
    d = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    sc = cfg.rope_scaling
    if sc is None:
        return inv
    low_wl = sc.original_max_position_embeddings / sc.low_freq_factor
    high_wl = sc.original_max_position_embeddings / sc.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = jnp.where(wavelen > low_wl, inv / sc.factor, inv)
    smooth = (sc.original_max_position_embeddings / wavelen - sc.low_freq_factor) / (
        sc.high_freq_factor - sc.low_freq_factor)
    smoothed = (1 - smooth) * scaled / sc.factor + smooth * scaled
    medium = (wavelen >= high_wl) & (wavelen <= low_wl)
    return jnp.where(medium, smoothed, scaled)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotate-half RoPE (the Hugging Face layout). x: [B, T, H, D], positions: [B, T]."""
    ang = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    ang = jnp.concatenate([ang, ang], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(ang), jnp.sin(ang)
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rot = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos + rot * sin).astype(x.dtype)


def alibi_slopes(num_heads: int) -> jax.Array:
    """Bloom's ALiBi head slopes (including the interleave for non-power-of-two head counts)."""
    closest = 2 ** math.floor(math.log2(num_heads))
    base = 2.0 ** (-(2.0 ** -(math.log2(closest) - 3)))
    slopes = [base ** (i + 1) for i in range(closest)]
    if closest != num_heads:
        extra_base = 2.0 ** (-(2.0 ** -(math.log2(2 * closest) - 3)))
        n_extra = min(closest, num_heads - closest)
        slopes += [extra_base ** (i + 1) for i in range(0, 2 * n_extra, 2)]
    return jnp.asarray(slopes, jnp.float32)


# ----------------------------------------------------------------------------- attention + block

def attention(cfg: ModelConfig, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
              q_pos: jax.Array, k_pos: jax.Array) -> jax.Array:
    """Grouped-query attention with an explicit boolean mask.

    q: [B, T, H, D]; k, v: [B, S, KV, D]; mask: [B, T, S]; returns [B, T, H, D].
    """
    b, t, h, d = q.shape
    kv = k.shape[2]
    g = h // kv
    qg = q.reshape(b, t, kv, g, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(d)
    if cfg.position == "alibi":
        slopes = alibi_slopes(h).reshape(kv, g)
        rel = (k_pos[:, None, :] - q_pos[:, :, None]).astype(jnp.float32)  # [B, T, S]
        scores = scores + slopes[None, :, :, None, None] * rel[:, None, None, :, :]
    big_neg = jnp.finfo(jnp.float32).min
    scores = jnp.where(mask[:, None, None, :, :], scores, big_neg)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, h, d).astype(q.dtype)


def project_qkv(cfg: ModelConfig, lp: Params, h_in: jax.Array, positions: jax.Array,
                inv_freq: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Queries [B,T,H,D], keys and values [B,T,KV,D] of normed hidden states (RoPE applied)."""
    q = jnp.einsum("bte,ehd->bthd", h_in, lp["wq"])
    k = jnp.einsum("bte,ehd->bthd", h_in, lp["wk"])
    v = jnp.einsum("bte,ehd->bthd", h_in, lp["wv"])
    if cfg.qkv_bias:
        q, k, v = q + lp["bq"], k + lp["bk"], v + lp["bv"]
    if cfg.position == "rope":
        q = apply_rope(q, positions, inv_freq)
        k = apply_rope(k, positions, inv_freq)
    return q, k, v


def block_output(cfg: ModelConfig, lp: Params, x: jax.Array, h_in: jax.Array,
                 attn: jax.Array) -> jax.Array:
    """The rest of a layer after attention: output projection, residual, MLP (serial or
    parallel block)."""
    attn_out = jnp.einsum("bthd,hde->bte", attn, lp["wo"])
    if cfg.out_bias:
        attn_out = attn_out + lp["bo"]

    def mlp(hh):
        up = jnp.einsum("bte,em->btm", hh, lp["w_up"])
        if cfg.mlp_bias:
            up = up + lp["b_up"]
        if cfg.mlp == "gated":
            act = activation(jnp.einsum("bte,em->btm", hh, lp["w_gate"]), cfg.activation) * up
        else:
            act = activation(up, cfg.activation)
        out = jnp.einsum("btm,me->bte", act, lp["w_down"])
        return out + lp["b_down"] if cfg.mlp_bias else out

    if cfg.parallel_block:
        return x + attn_out + mlp(h_in)
    x = x + attn_out
    return x + mlp(norm(x, lp["mlp_norm_scale"], lp.get("mlp_norm_bias"), cfg.norm, cfg.norm_eps))


def _block(cfg: ModelConfig, lp: Params, x: jax.Array, positions: jax.Array, mask: jax.Array,
           layer_cache: tuple[jax.Array, jax.Array] | None, cache_pos: jax.Array | None,
           cache_index: jax.Array | None, inv_freq: jax.Array | None):
    """One decoder layer. Returns the new hidden state and the (possibly updated) layer cache."""
    h_in = norm(x, lp["attn_norm_scale"], lp.get("attn_norm_bias"), cfg.norm, cfg.norm_eps)
    q, k, v = project_qkv(cfg, lp, h_in, positions, inv_freq)
    if layer_cache is not None:
        ck, cv = layer_cache
        ck = jax.lax.dynamic_update_slice_in_dim(ck, k.astype(ck.dtype), cache_index, axis=1)
        cv = jax.lax.dynamic_update_slice_in_dim(cv, v.astype(cv.dtype), cache_index, axis=1)
        keys, values, k_pos = ck, cv, cache_pos
        new_cache = (ck, cv)
    else:
        keys, values, k_pos = k, v, positions
        new_cache = None
    attn = attention(cfg, q, keys, values, mask, positions, k_pos)
    return block_output(cfg, lp, x, h_in, attn), new_cache


_UNROLL_LAYERS = contextvars.ContextVar("unroll_layers", default=False)


@contextlib.contextmanager
def unrolled_layers() -> Iterator[None]:
    """Functions traced inside unroll their layer scan: every layer is in the program, so XLA's
    cost analysis (which counts a loop body once) counts each. For cost analysis only; trace a
    fresh jitted function inside (a cached trace keeps the scan it was traced with)."""
    token = _UNROLL_LAYERS.set(True)
    try:
        yield
    finally:
        _UNROLL_LAYERS.reset(token)


def scan_layers(body: Callable, carry: Any, xs: Any) -> tuple[Any, Any]:
    """``lax.scan`` of ``body`` over the stacked layers (unrolled inside ``unrolled_layers``)."""
    return jax.lax.scan(body, carry, xs, unroll=True if _UNROLL_LAYERS.get() else 1)


def forward(cfg: ModelConfig, params: Params, tokens: jax.Array, positions: jax.Array,
            mask: jax.Array, *, logits_at: jax.Array | None = None, cache: KVCache | None = None,
            cache_index: jax.Array | int | None = None, return_hidden: bool = False):
    """Run the decoder.

    tokens, positions: [B, T] int32. mask: [B, T, S] bool, S = T without a cache, else the cache
    capacity (new keys are written at slots ``cache_index .. cache_index+T-1`` first).
    logits_at: optional [B, M] indices into T; the LM head then runs on those positions only.
    Returns ``(logits [B, M or T, vocab] float32, cache or None)``; with ``return_hidden`` the
    final-normed hidden states at the same positions are returned instead of logits.
    """
    dt = cfg.jnp_dtype
    x = jnp.take(params["embed"], tokens, axis=0).astype(dt)
    if cfg.embed_norm:
        x = norm(x, params["embed_norm_scale"], params["embed_norm_bias"], cfg.norm, cfg.norm_eps)
    inv_freq = rope_inv_freq(cfg) if cfg.position == "rope" else None

    cache_pos = None
    if cache is not None:
        cache_index = jnp.asarray(cache_index, jnp.int32)
        cache_pos = jax.lax.dynamic_update_slice_in_dim(cache.pos, positions.astype(jnp.int32),
                                                        cache_index, axis=1)

    def body(carry, xs):
        lp, lc = xs
        y, nc = _block(cfg, lp, carry, positions, mask, lc, cache_pos, cache_index, inv_freq)
        return y, nc

    layer_caches = (cache.k, cache.v) if cache is not None else None
    x, new_kv = scan_layers(body, x, (params["layers"], layer_caches))

    if logits_at is not None:
        x = jnp.take_along_axis(x, logits_at[..., None].astype(jnp.int32), axis=1)
    x = norm(x, params["final_norm_scale"], params.get("final_norm_bias"), cfg.norm, cfg.norm_eps)
    new_cache = KVCache(new_kv[0], new_kv[1], cache_pos) if cache is not None else None
    if return_hidden:
        return x, new_cache
    head = params["embed"].T if cfg.tie_embeddings else params["lm_head"]
    logits = jnp.einsum("bme,ev->bmv", x, head, preferred_element_type=jnp.float32)
    return logits, new_cache


def causal_mask(valid: jax.Array) -> jax.Array:
    """[B, T] validity (right or left padding) -> [B, T, T] causal mask over valid keys."""
    t = valid.shape[1]
    tri = jnp.tril(jnp.ones((t, t), bool))
    return tri[None] & valid[:, None, :]
