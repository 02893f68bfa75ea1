"""XLA's own count of the scoring cores' cost: FLOPs and bytes accessed (cost analysis) and buffer
sizes (memory analysis) of every compiled shape, lowered ahead of time on abstract weights, to
check the engine's FLOP model (``engine.flops``) against the compiler's.

XLA counts a while loop's body once, so scanned layers would appear as one layer. A cost is
taken as X(0) + L * (X(2) - X(0)), each X from XLA's analysis of the program compiled for the
config with 0 and 2 layers (abstract weights): with 2 layers the scan stays a loop whose body (one
layer) is counted once; a 1-layer scan is inlined and partly pruned. Where a 0-layer program is
partitioned unlike the real one (the decode loop: its empty KV cache no longer anchors the rows'
sharding), ``unrolled=True`` takes U(2) + (L - 2) * (U(4) - U(2)) / 2 instead, U compiled with the
layer scan unrolled (``layers.unrolled_layers``: every layer counted, each reading its weights as
matmul operands, without the loop's per-layer slice of the stacked weights); sound only when no
work of the last layer is dead (XLA prunes dead work of an unrolled layer, not of a loop body:
the prefill cores, which use only the last layer's keys/values or last position, would lose it)."""

from __future__ import annotations

from typing import Any, Callable

import jax

from valueprobe_jax.engine.cores import CoreKind, abstract_inputs, build_core
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.decoder import nest_params
from valueprobe_jax.models.layers import param_shapes, unrolled_layers

Cost = tuple[float | None, float | None]  # (FLOPs, bytes accessed); None: not reported


def abstract_params(cfg: ModelConfig) -> dict[str, Any]:
    """ShapeDtypeStructs of ``cfg``'s parameters (no sharding: see ``sharding.abstract_params``)."""
    return nest_params({k: jax.ShapeDtypeStruct(v, cfg.jnp_dtype)
                        for k, v in param_shapes(cfg).items()})


def _compiled(cfg: Any, key: tuple) -> Any:
    fn = build_core(cfg, CoreKind(key[0]))
    return fn.lower(abstract_params(cfg), *abstract_inputs(cfg, key)).compile()


def xla_cost(compiled: Any) -> Cost:
    """(FLOPs, bytes accessed) of one call of a compiled program as XLA counts them (per device
    for a partitioned program); None where the backend does not report them."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 (backends without cost analysis)
        return None, None
    ca = ca[0] if isinstance(ca, (list, tuple)) and ca else ca
    if ca is None:
        return None, None
    # an empty analysis: nothing to count (e.g. 0 layers)
    return float(ca.get("flops", 0.0)), float(ca.get("bytes accessed", 0.0))


def layer_extrapolated(cfg: ModelConfig, compile_for: Callable[[ModelConfig], Any], *,
                       unrolled: bool = False) -> Cost:
    """(FLOPs, bytes) at ``cfg``'s depth from shallow compiles (see the module docstring);
    ``compile_for(cfg')`` compiles a fresh jitted program for ``cfg'``."""
    if unrolled:
        with unrolled_layers():
            lo, hi = (xla_cost(compile_for(cfg.replace(num_layers=n))) for n in (2, 4))
        n_lo, per = 2, 2
    else:
        lo, hi = (xla_cost(compile_for(cfg.replace(num_layers=n))) for n in (0, 2))
        n_lo, per = 0, 1
    return tuple(None if a is None or b is None else a + (cfg.num_layers - n_lo) * (b - a) / per
                 for a, b in zip(lo, hi))  # type: ignore[return-value]


def memory_bytes(compiled: Any) -> dict[str, int] | None:
    """Argument, output and temporary bytes per device of a compiled program (None where the
    backend does not report them)."""
    try:
        ma = compiled.memory_analysis()
        return {"argument": int(ma.argument_size_in_bytes), "output": int(ma.output_size_in_bytes),
                "temp": int(ma.temp_size_in_bytes)}
    except Exception:  # noqa: BLE001
        return None


def xla_costs(cfg: Any, shapes: dict[tuple, int]) -> dict[str, Any]:
    """XLA's cost analysis (FLOPs) and memory analysis of every compiled shape, weighted by how
    often each ran; None where the backend does not report them."""
    flops: float | None = 0.0
    peak: int | None = 0
    for key, calls in shapes.items():
        f, _ = layer_extrapolated(cfg, lambda c, key=key: _compiled(c, key))
        flops = None if flops is None or f is None else flops + calls * f
        mem = memory_bytes(_compiled(cfg, key))
        peak = None if peak is None or mem is None else max(peak, sum(mem.values()))
    return {"xla_flops": flops, "xla_peak_bytes": peak}


__all__ = ["Cost", "abstract_params", "xla_cost", "layer_extrapolated", "memory_bytes",
           "xla_costs"]
