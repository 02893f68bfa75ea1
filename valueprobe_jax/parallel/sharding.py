"""Device mesh and logical-axis sharding rules (MaxText style: sharding is data, not code).

Every parameter carries logical axis names (``models/layers.py`` LOGICAL_AXES; the NNX Decoder's
Params hold the same names as metadata). One rules table maps each logical axis onto mesh axes
``data``, ``fsdp`` and ``tensor``; a dimension the mesh does not divide is replicated instead
(``Fallback`` records say which). The same code runs on one CPU (every axis of size 1) and on a pod.

Typical use::

    mesh = make_mesh("fsdp=4,tensor=2")
    params = shard_params(params, mesh, cfg)
    step = jit_sharded(fn, mesh, in_shardings=(param_shardings(cfg, mesh), ...), out_shardings=...)
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.decoder import flatten_params, nest_params
from valueprobe_jax.models.layers import LOGICAL_AXES, KVCache, param_shapes

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes it is split over, in order. () = replicated.
# Parameters: "embed" over fsdp (ZeRO-3 style: gathered per layer inside the scan), heads / mlp /
# vocab over tensor (Megatron style). Activations and the KV cache: batch over (data, fsdp), the
# cache's kv_heads over tensor, sequence axes replicated.
LOGICAL_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", ("tensor",)),
    ("embed", ("fsdp",)),
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("mlp", ("tensor",)),
    ("layers", ()),
    ("head_dim", ()),
    ("length", ()),
    ("cache_batch", ("data", "fsdp")),
    ("cache_sequence", ()),
)

# Logical axes of the KV cache tensors (models/layers.py KVCache).
CACHE_AXES = KVCache(k=("layers", "cache_batch", "cache_sequence", "kv_heads", "head_dim"),
                     v=("layers", "cache_batch", "cache_sequence", "kv_heads", "head_dim"),
                     pos=("cache_batch", "cache_sequence"))


# ----------------------------------------------------------------------------- mesh

def parse_mesh_spec(spec: Any, num_devices: int | None = None) -> dict[str, int]:
    """"data=2,tensor=4" / {"fsdp": 8} / an ml-collections ConfigDict -> {data, fsdp, tensor}.

    Missing axes are 1. One axis may be -1: it takes whatever the other axes leave of
    ``num_devices``. With ``num_devices`` given, the product must equal it.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        if num_devices is None:
            raise InputError("mesh: no mesh spec and no device count to default to")
        spec = {"data": num_devices}
    if hasattr(spec, "to_dict"):  # ml_collections.ConfigDict / FrozenConfigDict
        spec = spec.to_dict()
    if isinstance(spec, str):
        items = {}
        for part in spec.split(","):
            m = re.fullmatch(r"\s*(\w+)\s*[=:]\s*(-?\d+)\s*", part)
            if not m:
                raise InputError(f"mesh {spec!r}: expected axis=size pairs like 'data=2,tensor=4'")
            if m.group(1) in items:
                raise InputError(f"mesh {spec!r}: axis {m.group(1)!r} given twice")
            items[m.group(1)] = int(m.group(2))
    elif isinstance(spec, Mapping):
        items = dict(spec)
    else:
        raise InputError(f"mesh {spec!r}: expected a string 'data=2,tensor=4' or a mapping")
    unknown = sorted(set(items) - set(MESH_AXES))
    if unknown:
        raise InputError(f"mesh {_show(spec)}: unknown axis {unknown[0]!r} (axes: {', '.join(MESH_AXES)})")
    shape = {a: 1 for a in MESH_AXES}
    for a, n in items.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or (n < 1 and n != -1):
            raise InputError(f"mesh {_show(spec)}: axis {a!r} size must be a positive integer or -1, got {n!r}")
        shape[a] = int(n)
    wild = [a for a, n in shape.items() if n == -1]
    if len(wild) > 1:
        raise InputError(f"mesh {_show(spec)}: at most one axis may be -1")
    rest = math.prod(n for n in shape.values() if n != -1)
    if wild:
        if num_devices is None or num_devices % rest:
            raise InputError(f"mesh {_show(spec)}: cannot fill axis {wild[0]!r} "
                             f"({num_devices} devices, other axes multiply to {rest})")
        shape[wild[0]] = num_devices // rest
    elif num_devices is not None and rest != num_devices:
        raise InputError(f"mesh {_show(spec)}: axis sizes multiply to {rest} but there are "
                         f"{num_devices} devices")
    return shape


def _show(spec: Any) -> str:
    return repr(spec) if isinstance(spec, str) else repr(dict(spec))


def mesh_spec_str(shape: Mapping[str, int]) -> str:
    """{data: 1, fsdp: 4, tensor: 2} -> "data=1,fsdp=4,tensor=2" (the CLI form)."""
    return ",".join(f"{a}={shape.get(a, 1)}" for a in MESH_AXES)


def make_mesh(spec: Any = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh.

    ``devices`` default: on one host, all its devices. On several hosts (after
    ``multihost.initialize_distributed``), this host's devices when the spec fits them (each host
    then runs its own work items independently: ``multihost.work_split``), else every device of
    every host (the hosts run the same items in lockstep: a model too big for one host).

    Axes are of the Auto kind: jit's in/out shardings pin inputs and outputs and XLA's GSPMD
    partitions the rest, so the model code needs no sharding annotations.
    """
    if devices is None:
        devices = jax.devices()
        if jax.process_count() > 1:
            try:
                parse_mesh_spec(spec, jax.local_device_count())
                devices = jax.local_devices()
            except InputError:
                pass
    devices = list(devices)
    shape = parse_mesh_spec(spec, len(devices))
    return jax.make_mesh(tuple(shape[a] for a in MESH_AXES), MESH_AXES,
                         axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def batch_ways(mesh: Mesh | Mapping[str, int] | None) -> int:
    """Shards of a batch dimension on ``mesh``: the product of the mesh axes the "batch" rule
    splits it over (data x fsdp); 1 without a mesh."""
    if mesh is None:
        return 1
    shape = mesh_shape(mesh)
    return math.prod(shape[a] for a in dict(LOGICAL_RULES)["batch"])


def mesh_shape(mesh: Mesh | Mapping[str, int]) -> dict[str, int]:
    """Axis sizes of a Mesh, or a plain {axis: size} mapping (planning without devices)."""
    if isinstance(mesh, Mesh):
        return dict(mesh.shape)
    return {a: int(mesh.get(a, 1)) for a in MESH_AXES}


# ----------------------------------------------------------------------------- rules

@dataclasses.dataclass(frozen=True)
class Fallback:
    """A dimension that a rule wanted split over ``mesh_axis`` but that axis does not divide."""

    tensor: str
    logical: str
    size: int
    mesh_axis: str
    mesh_size: int

    def __str__(self) -> str:
        return (f"{self.tensor}: {self.logical} ({self.size}) not divisible by "
                f"{self.mesh_axis}={self.mesh_size}, replicated over {self.mesh_axis}")


def logical_to_pspec(logical: Sequence[str | None], shape: Sequence[int],
                     mesh: Mesh | Mapping[str, int], *, rules=LOGICAL_RULES,
                     name: str = "") -> tuple[PartitionSpec, list[Fallback]]:
    """PartitionSpec of one array from its logical axes, with divisibility fallbacks.

    Mesh axes of size 1 are left out of the spec; a mesh axis is used at most once per array
    (the first dimension that asks for it gets it).
    """
    if len(logical) != len(shape):
        raise ValueError(f"{name or 'array'}: {len(logical)} logical axes for shape {tuple(shape)}")
    sizes = mesh_shape(mesh)
    table = dict(rules)
    used: set[str] = set()
    out: list[Any] = []
    fallbacks: list[Fallback] = []
    for ax, dim in zip(logical, shape):
        if ax is not None and ax not in table:
            raise ValueError(f"{name or 'array'}: no sharding rule for logical axis {ax!r}")
        picked: list[str] = []
        left = int(dim)
        for m in table.get(ax, ()) if ax is not None else ():
            n = sizes.get(m, 1)
            if n == 1 or m in used:
                continue
            if left % n:
                fallbacks.append(Fallback(name, ax, int(dim), m, n))
                continue
            picked.append(m)
            used.add(m)
            left //= n
        out.append(None if not picked else picked[0] if len(picked) == 1 else tuple(picked))
    while out and out[-1] is None:
        out.pop()
    return PartitionSpec(*out), fallbacks


def _shapes_of(params_or_cfg: Any) -> dict[str, tuple[int, ...]]:
    if isinstance(params_or_cfg, ModelConfig):
        return param_shapes(params_or_cfg)
    return {k: tuple(np.shape(v)) for k, v in flatten_params(params_or_cfg).items()}


def param_pspecs(params_or_cfg: Any, mesh: Mesh | Mapping[str, int], *, rules=LOGICAL_RULES,
                 logical_axes: Mapping[str, Sequence[str]] = LOGICAL_AXES
                 ) -> tuple[dict[str, Any], list[Fallback]]:
    """Nested PartitionSpec tree (same structure as the parameter tree) and the fallbacks taken.

    ``params_or_cfg``: a ModelConfig, or a parameter tree of arrays / ShapeDtypeStructs.
    """
    specs: dict[str, PartitionSpec] = {}
    fallbacks: list[Fallback] = []
    for name, shape in _shapes_of(params_or_cfg).items():
        if name not in logical_axes:
            raise ValueError(f"parameter {name!r} has no logical axes")
        specs[name], fb = logical_to_pspec(logical_axes[name], shape, mesh, rules=rules, name=name)
        fallbacks += fb
    return nest_params(specs), fallbacks


def param_shardings(params_or_cfg: Any, mesh: Mesh, *, rules=LOGICAL_RULES) -> dict[str, Any]:
    """Nested NamedSharding tree for the parameters on ``mesh``."""
    specs, _ = param_pspecs(params_or_cfg, mesh, rules=rules)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def sharding_fallbacks(params_or_cfg: Any, mesh: Mesh | Mapping[str, int], *,
                       rules=LOGICAL_RULES) -> list[str]:
    """One line per parameter dimension that had to be replicated (for logs and `plan`)."""
    return [str(f) for f in param_pspecs(params_or_cfg, mesh, rules=rules)[1]]


def logical_axes_of(module: Any) -> dict[str, tuple[str, ...]]:
    """Flat name -> logical axes, read from an NNX module's Param metadata (the Decoder)."""
    from flax import nnx

    specs = nnx.get_partition_spec(nnx.state(module, nnx.Param))
    flat = flatten_params(nnx.to_pure_dict(specs))
    return {k: tuple(v) for k, v in flat.items()}


# ----------------------------------------------------------------------------- placement

def _put(x: Any, sharding: NamedSharding) -> jax.Array:
    """Place one array. Host arrays go slice by slice (make_array_from_callback): no device ever
    holds the full tensor, and it works when the mesh spans several hosts."""
    if isinstance(x, jax.Array):
        return jax.device_put(x, sharding)
    arr = np.asarray(x)
    return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def shard_params(params: Mapping[str, Any], mesh: Mesh, cfg: ModelConfig | None = None, *,
                 rules=LOGICAL_RULES) -> dict[str, Any]:
    """Place a parameter tree on ``mesh`` following the rules (cast to ``cfg.dtype`` if given)."""
    shardings = param_shardings(params, mesh, rules=rules)
    if cfg is not None:
        dt = cfg.jnp_dtype
        params = jax.tree.map(lambda x: x.astype(dt) if x.dtype != dt else x, params)
    return jax.tree.map(_put, params, shardings)


def abstract_params(cfg: ModelConfig, mesh: Mesh, *, dtype: Any = None,
                    rules=LOGICAL_RULES) -> dict[str, Any]:
    """ShapeDtypeStructs carrying the target shardings: the restore target for orbax
    (each device reads only its own slices) and the abstract input of jit/eval_shape."""
    dt = jax.numpy.dtype(dtype or cfg.dtype)
    shardings = flatten_params(param_shardings(cfg, mesh, rules=rules))
    return nest_params({name: jax.ShapeDtypeStruct(shape, dt, sharding=shardings[name])
                  for name, shape in param_shapes(cfg).items()})


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_pspec(shape: Sequence[int], mesh: Mesh | Mapping[str, int]) -> PartitionSpec:
    """Leading (batch) dimension over (data, fsdp) where divisible, the rest replicated."""
    if len(shape) == 0:
        return PartitionSpec()
    logical = ("batch",) + ("length",) * (len(shape) - 1)
    return logical_to_pspec(logical, shape, mesh)[0]


def batch_sharding(mesh: Mesh, shape: Sequence[int]) -> NamedSharding:
    return NamedSharding(mesh, batch_pspec(shape, mesh))


def batch_shardings(tree: Any, mesh: Mesh) -> Any:
    """A NamedSharding per array leaf of a batch tree (tokens, positions, mask, ...)."""
    return jax.tree.map(lambda x: batch_sharding(mesh, np.shape(x)), tree)


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Place every array of a batch with its batch dimension split over (data, fsdp)."""
    return jax.tree.map(lambda x: _put(x, batch_sharding(mesh, np.shape(x))), tree)


def cache_pspecs(cfg: ModelConfig, mesh: Mesh | Mapping[str, int], batch: int,
                 capacity: int) -> tuple[KVCache, list[Fallback]]:
    """PartitionSpecs of a KVCache: batch over (data, fsdp), kv_heads over tensor, when divisible."""
    kshape = (cfg.num_layers, batch, capacity, cfg.num_kv_heads, cfg.head_dim)
    k, fk = logical_to_pspec(CACHE_AXES.k, kshape, mesh, name="cache/k")
    pos, fp = logical_to_pspec(CACHE_AXES.pos, (batch, capacity), mesh, name="cache/pos")
    return KVCache(k=k, v=k, pos=pos), fk + fp


def cache_shardings(cfg: ModelConfig, mesh: Mesh, batch: int, capacity: int) -> KVCache:
    specs, _ = cache_pspecs(cfg, mesh, batch, capacity)
    return KVCache(*(NamedSharding(mesh, s) for s in specs))


def logits_sharding(mesh: Mesh, shape: Sequence[int]) -> NamedSharding:
    """[B, M, vocab] logits: batch over (data, fsdp), vocab over tensor (where divisible)."""
    spec, _ = logical_to_pspec(("batch", "length", "vocab"), shape, mesh)
    return NamedSharding(mesh, spec)


def vocab_rows_sharding(mesh: Mesh, shape: Sequence[int]) -> NamedSharding:
    """[B, vocab] next-token logits: batch over (data, fsdp), vocab over tensor (where divisible)."""
    spec, _ = logical_to_pspec(("batch", "vocab"), shape, mesh)
    return NamedSharding(mesh, spec)


# ----------------------------------------------------------------------------- jit

def jit_sharded(fn: Callable, mesh: Mesh | None, *, in_shardings: Any = None,
                out_shardings: Any = None, **jit_kwargs: Any) -> Callable:
    """``jax.jit`` with explicit in/out shardings on ``mesh``; plain jit when mesh is None.

    Shardings are NamedShardings (they carry their mesh), so the jitted function can be called
    from anywhere; XLA partitions the body from the pinned inputs and outputs.
    """
    if mesh is None:
        return jax.jit(fn, **jit_kwargs)
    return jit_with_shardings(fn, in_shardings, out_shardings, **jit_kwargs)


def jit_with_shardings(fn: Callable, in_shardings: Any = None, out_shardings: Any = None,
                       **jit_kwargs: Any) -> Callable:
    """``jax.jit`` passing only the shardings that are given (None = let XLA infer them); the
    one place the scoring and sampling cores are jitted."""
    kw = dict(jit_kwargs)
    if in_shardings is not None:
        kw["in_shardings"] = in_shardings
    if out_shardings is not None:
        kw["out_shardings"] = out_shardings
    return jax.jit(fn, **kw)


__all__ = ["jit_with_shardings", "MESH_AXES", "LOGICAL_RULES", "CACHE_AXES", "Fallback", "parse_mesh_spec", "make_mesh",
           "batch_ways", "mesh_shape", "mesh_spec_str", "logical_to_pspec", "param_pspecs", "param_shardings",
           "sharding_fallbacks", "logical_axes_of", "shard_params", "abstract_params", "replicated",
           "batch_pspec", "batch_sharding", "batch_shardings", "shard_batch", "cache_pspecs",
           "cache_shardings", "logits_sharding", "vocab_rows_sharding", "jit_sharded"]
