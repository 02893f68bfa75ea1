"""The Flax NNX decoder module: owns the parameters (annotated with logical axis names) and calls
the pure forward pass of ``layers.py``. It knows nothing about prompts or tokenizers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.layers import LOGICAL_AXES, KVCache, Params, forward, param_shapes


def nest_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"layers/wq": array, ...} -> nested parameter dict (the inverse of ``flatten_params``)."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameter dict -> {"layers/wq": array, ...}."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten_params(v, name + "/"))
        else:
            flat[name] = v
    return flat


class _Layers(nnx.Module):
    """Holder of the stacked per-layer parameters (leading ``layers`` axis)."""

    def __init__(self, params: dict[str, nnx.Param]):
        for k, v in params.items():
            setattr(self, k, v)


class Decoder(nnx.Module):
    """A decoder-only LM of any supported family.

    ``Decoder(cfg, params=tree)`` wraps loaded weights; ``Decoder(cfg, rngs=nnx.Rngs(0))`` draws
    small random weights (tests, benchmarks with random weights).
    """

    def __init__(self, cfg: ModelConfig, *, params: Params | None = None,
                 rngs: nnx.Rngs | None = None, init_std: float = 0.02):
        self.cfg = cfg
        shapes = param_shapes(cfg)
        flat = flatten_params(params) if params is not None else None
        if flat is not None:
            check_params(cfg, flat)
        elif rngs is None:
            raise ValueError("Decoder needs either params= or rngs=")
        values: dict[str, nnx.Param] = {}
        for name, shape in shapes.items():
            if flat is not None:
                value = jnp.asarray(flat[name], cfg.jnp_dtype)
            elif name.endswith("_scale"):
                value = jnp.ones(shape, cfg.jnp_dtype)
            elif name.endswith("_bias") or name.split("/")[-1].startswith("b"):
                value = jnp.zeros(shape, cfg.jnp_dtype)
            else:
                value = (init_std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(cfg.jnp_dtype)
            values[name] = nnx.Param(value, sharding_names=LOGICAL_AXES[name], eager_sharding=False)
        nested = nest_params(values)
        self.layers = _Layers(nested.pop("layers"))
        for k, v in nested.items():
            setattr(self, k, v)

    def params(self) -> Params:
        """The parameter tree as plain arrays (the input of ``layers.forward``)."""
        return nnx.to_pure_dict(nnx.state(self, nnx.Param))

    def __call__(self, tokens: jax.Array, positions: jax.Array, mask: jax.Array, **kw: Any):
        return forward(self.cfg, self.params(), tokens, positions, mask, **kw)

    def init_cache(self, batch: int, capacity: int) -> KVCache:
        return KVCache.zeros(self.cfg, batch, capacity)


def check_params(cfg: ModelConfig, flat: dict[str, Any]) -> None:
    """One clear error for a missing, unexpected or mis-shaped tensor."""
    shapes = param_shapes(cfg)
    missing = sorted(set(shapes) - set(flat))
    extra = sorted(set(flat) - set(shapes))
    if missing:
        raise ValueError(f"checkpoint is missing parameter(s) {missing} for a {cfg.family} model")
    if extra:
        raise ValueError(f"checkpoint has unexpected parameter(s) {extra} for a {cfg.family} model")
    for name, shape in shapes.items():
        got = tuple(np.shape(flat[name]))
        if got != shape:
            raise ValueError(f"tensor shape mismatch for {name}: checkpoint has {got}, "
                             f"config expects {shape}")
