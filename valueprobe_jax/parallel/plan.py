"""Memory plan: bytes per device for parameters, KV cache and activations of a model on a mesh,
whether it fits on the accelerators the paper's models run on, and which mesh to use.

Parameters and the KV cache are exact (every tensor's shape divided by the mesh axes the sharding
rules of ``sharding.py`` actually split it over, fallbacks included). Activations are an estimate
of the peak of one forward pass over ``batch`` rows of ``max_len`` tokens (a packed scoring row,
or a prefill). Layers run under ``lax.scan`` so one layer's intermediates are live at a time::

    act = b*T*(2*E + (h + 2*kv)*D + 3*m)*w      residual + normed input, q/k/v, MLP gate/up/act
        + b*h*T*S*(4 + 4 + w)                   attention scores f32, masked f32, probabilities
        + b*T*h*D*4                             attention output (f32 accumulation)
        + b*T*S                                 boolean mask
        + b*T*v*4                               logits f32 at every position (upper bound)

with T = S = max_len, w the dtype's bytes, b = batch / (data*fsdp) (where divisible), and
h, kv, m, v = heads, kv_heads, mlp, vocab divided by ``tensor`` where divisible. The KV cache is
sized for ``batch`` rows of capacity ``max_len``: 2 * layers * b * S * kv * head_dim * w.
A device "fits" when the total is at most ``USABLE_FRACTION`` of its memory (the rest is left for
XLA's workspace, compiled programs and fragmentation).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp

from valueprobe_jax.errors import InputError
from valueprobe_jax.vocabulary import check_choice
from valueprobe_jax.models.decoder import flatten_params
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.layers import param_shapes
from valueprobe_jax.parallel.sharding import (MESH_AXES, Fallback, batch_ways, cache_pspecs,
                                     logical_to_pspec, param_pspecs, parse_mesh_spec)

GiB = 1024 ** 3
USABLE_FRACTION = 0.9


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str
    chips: int  # devices JAX sees (TPU chips / GPUs)
    hbm_gib: float  # memory per device
    hosts: int
    short: str  # the name ``plan --accelerator`` takes
    peak_tflops: float  # dense bf16 FLOP/s per device, 1e12
    hbm_gbps: float  # HBM bandwidth per device, 1e9 bytes/s

    @property
    def usable_bytes(self) -> float:
        return self.hbm_gib * GiB * USABLE_FRACTION

    def label(self) -> str:
        return f"{self.name} ({self.chips}x{self.hbm_gib:g} GiB)"


# v4-8 = 4 chips of 32 GiB; v5e-16 = 16 chips of 16 GiB; v5p-64 = 64 TensorCores = 32 chips of
# 95 GiB; one H100 SXM with 80 GiB. Peak bf16 FLOP/s and HBM bandwidth per chip, public specs:
# v4 275 TFLOP/s, 1200 GB/s (cloud.google.com/tpu/docs/v4); v5e 197 TFLOP/s, 819 GB/s
# (cloud.google.com/tpu/docs/v5e); v5p 459 TFLOP/s, 2765 GB/s (cloud.google.com/tpu/docs/v5p);
# H100 SXM 989 TFLOP/s dense bf16 (1979 with sparsity), 3.35 TB/s (NVIDIA H100 datasheet).
ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator("tpu-v4-8", 4, 32, 1, "v4-8", 275, 1200),
    Accelerator("tpu-v5e-16", 16, 16, 4, "v5e-16", 197, 819),
    Accelerator("tpu-v5p-64", 32, 95, 8, "v5p-64", 459, 2765),
    Accelerator("h100-80gb", 1, 80, 1, "h100", 989, 3350),
)


def get_accelerator(name: str) -> Accelerator:
    """The accelerator of a short name (h100, v5e-16, ...) or a full one (tpu-v5e-16, ...)."""
    for a in ACCELERATORS:
        if name in (a.short, a.name):
            return a
    check_choice("--accelerator", name, [a.short for a in ACCELERATORS])
    raise AssertionError(name)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device of one model on one mesh (see the module docstring for the formulas)."""

    model: str
    mesh: dict[str, int]
    batch: int
    max_len: int
    dtype: str
    num_params: int
    params_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    fallbacks: tuple[str, ...]

    @property
    def total_bytes(self) -> int:
        return self.params_bytes + self.kv_cache_bytes + self.activation_bytes

    @property
    def devices(self) -> int:
        return math.prod(self.mesh.values())

    def fits(self, acc: Accelerator) -> bool:
        return self.devices == acc.chips and self.total_bytes <= acc.usable_bytes

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["fallbacks"] = list(self.fallbacks)
        d["total_bytes"] = self.total_bytes
        return d


def _split(pspec_entry: Any, mesh: Mapping[str, int]) -> int:
    if pspec_entry is None:
        return 1
    axes = (pspec_entry,) if isinstance(pspec_entry, str) else tuple(pspec_entry)
    return math.prod(mesh[a] for a in axes)


def _local_shape(shape: Sequence[int], pspec: Any, mesh: Mapping[str, int]) -> list[int]:
    entries = list(pspec) + [None] * (len(shape) - len(pspec))
    return [d // _split(e, mesh) for d, e in zip(shape, entries)]


def _dim_split(logical: str, size: int, mesh: Mapping[str, int]) -> int:
    """How many ways the rules split one activation dimension (1 when it falls back)."""
    spec, _ = logical_to_pspec((logical,), (size,), mesh)
    return _split(spec[0], mesh) if len(spec) else 1


def plan_memory(cfg: ModelConfig, mesh: Any, *, batch: int, max_len: int, dtype: str | None = None,
                name: str = "") -> MemoryPlan:
    """Per-device bytes of ``cfg`` on ``mesh`` (a spec string, mapping or Mesh) for ``batch``
    rows of ``max_len`` tokens. No device is touched."""
    if batch < 1 or max_len < 1:
        raise InputError(f"plan: batch ({batch}) and max-len ({max_len}) must be positive")
    mesh = parse_mesh_spec(dict(mesh.shape) if hasattr(mesh, "devices") else mesh)
    dtype = dtype or cfg.dtype
    try:
        w = jnp.dtype(dtype).itemsize
    except TypeError as e:
        raise InputError(f"--dtype {dtype!r}: unknown dtype") from e
    shapes = param_shapes(cfg)
    specs, fallbacks = param_pspecs(cfg, mesh)
    flat_specs = flatten_params(specs)
    params_bytes = sum(math.prod(_local_shape(s, flat_specs[n], mesh)) * w for n, s in shapes.items())
    num_params = sum(math.prod(s) for s in shapes.values())

    cspecs, _ = cache_pspecs(cfg, mesh, batch, max_len)
    kshape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
    kv_bytes = 2 * math.prod(_local_shape(kshape, cspecs.k, mesh)) * w
    kv_bytes += math.prod(_local_shape((batch, max_len), cspecs.pos, mesh)) * 4

    b = batch // _dim_split("batch", batch, mesh)
    h = cfg.num_heads // _dim_split("heads", cfg.num_heads, mesh)
    kv = cfg.num_kv_heads // _dim_split("kv_heads", cfg.num_kv_heads, mesh)
    m = cfg.intermediate_size // _dim_split("mlp", cfg.intermediate_size, mesh)
    v = cfg.vocab_size // _dim_split("vocab", cfg.vocab_size, mesh)
    t = s = max_len
    e, d = cfg.hidden_size, cfg.head_dim
    act = (b * t * (2 * e + (h + 2 * kv) * d + 3 * m) * w + b * h * t * s * (8 + w)
           + b * t * h * d * 4 + b * t * s + b * t * v * 4)

    _, batch_fb = logical_to_pspec(("batch",), (batch,), mesh, name="activations")
    notes = tuple(str(f) for f in fallbacks + batch_fb)
    return MemoryPlan(name or cfg.family, mesh, batch, max_len, dtype, num_params, int(params_bytes),
                      int(kv_bytes), int(act), notes)


def candidate_meshes(devices: int) -> list[dict[str, int]]:
    """Every (data, fsdp, tensor) factorisation of ``devices``."""
    out = []
    for f, t in itertools.product(range(1, devices + 1), repeat=2):
        if devices % (f * t) == 0:
            out.append({"data": devices // (f * t), "fsdp": f, "tensor": t})
    return out


def suggest_mesh(cfg: ModelConfig, acc: Accelerator, *, batch: int, max_len: int,
                 dtype: str | None = None, name: str = "") -> MemoryPlan | None:
    """The mesh with the smallest model-parallel degree (fsdp * tensor) that fits ``acc``; the
    rest of the chips go to data parallelism. A mesh whose data*fsdp does not divide the batch
    (so every device would redo the whole batch) ranks after every mesh that splits it. Ties:
    fewer replicated parameter dimensions, then the smaller per-device total. None when no mesh
    fits."""
    best = None
    for mesh in candidate_meshes(acc.chips):
        p = plan_memory(cfg, mesh, batch=batch, max_len=max_len, dtype=dtype, name=name)
        if not p.fits(acc):
            continue
        batch_split = batch % batch_ways(mesh) == 0
        rank = (not batch_split, mesh["fsdp"] * mesh["tensor"], len(p.fallbacks), p.total_bytes,
                -mesh["tensor"])
        if best is None or rank < best[0]:
            best = (rank, p)
    return None if best is None else best[1]


def one_host(acc: Accelerator) -> Accelerator:
    """One host of ``acc`` (its chips / hosts): what a per-host mesh runs on."""
    return dataclasses.replace(acc, name=f"one host of {acc.name}", chips=acc.chips // acc.hosts,
                               hosts=1)


def mesh_replicas(acc: Accelerator, devices: int) -> int:
    """Copies of a mesh of ``devices`` chips that ``valueprobe run`` runs on ``acc``: one for a
    mesh over all its chips (on several hosts, in lockstep), one per host for a mesh over one
    host's chips (each host its own work items). ``sharding.make_mesh`` takes all of a host's or
    all of the slice's devices, so any other size is an InputError."""
    if devices == acc.chips:
        return 1
    per_host = acc.chips // acc.hosts
    if acc.hosts > 1 and devices == per_host:
        return acc.hosts

    def chips(n: int) -> str:
        return f"{n} chip" + ("s" if n > 1 else "")

    sizes = (f"all its {chips(acc.chips)}" if acc.hosts == 1 else
             f"one host's {chips(per_host)} or all {chips(acc.chips)}")
    raise InputError(f"{devices} devices: `valueprobe run` on {acc.name} takes a mesh over {sizes}")


def suggest_run_mesh(cfg: ModelConfig, acc: Accelerator, *, batch: int, max_len: int,
                     dtype: str | None = None, name: str = "") -> tuple[MemoryPlan, int] | None:
    """The mesh to run a sweep on and its replicas (``mesh_replicas``): ``suggest_mesh`` for one
    host's chips, one replica per host, when such a mesh fits; otherwise ``suggest_mesh`` over
    all chips, one replica. None when neither fits.

    Why one host: the hosts then split the work items, and each fills its decode rows from its
    own chunks. One program over every host shares each chunk's samples among all its batch
    shards (a 32-probe chunk has 320 samples: 40 rows for each of v5p-64's 8 data shards instead
    of the Sampler's 64), and its steps wait on collectives across hosts."""
    plan = suggest_mesh(cfg, one_host(acc), batch=batch, max_len=max_len, dtype=dtype, name=name)
    if plan is not None:
        return plan, acc.hosts
    plan = suggest_mesh(cfg, acc, batch=batch, max_len=max_len, dtype=dtype, name=name)
    return None if plan is None else (plan, 1)


def compact_mesh(mesh: Mapping[str, int]) -> str:
    """{data: 1, fsdp: 4, tensor: 2} -> "fsdp=4,tensor=2" (size-1 axes dropped)."""
    parts = [f"{a}={mesh[a]}" for a in MESH_AXES if mesh.get(a, 1) != 1]
    return ",".join(parts) or "data=1"


def gib(n: float) -> str:
    return f"{n / GiB:.2f}"


__all__ = ["ACCELERATORS", "Accelerator", "get_accelerator", "MemoryPlan", "plan_memory", "suggest_mesh",
           "one_host", "mesh_replicas", "suggest_run_mesh",
           "candidate_meshes", "compact_mesh", "GiB", "USABLE_FRACTION", "Fallback"]
