"""XLA's own count of the scoring cores' cost: FLOPs (cost analysis) and buffer sizes (memory
analysis) of every compiled shape, lowered ahead of time on abstract weights, to check the
engine's FLOP model (``engine.flops``) against the compiler's."""

from __future__ import annotations

from typing import Any

import jax

from valueprobe_jax.engine.cores import CoreKind, abstract_inputs, build_core
from valueprobe_jax.models.decoder import nest_params
from valueprobe_jax.models.layers import param_shapes


def _abstract_params(cfg: Any) -> dict[str, Any]:
    return nest_params({k: jax.ShapeDtypeStruct(v, cfg.jnp_dtype)
                        for k, v in param_shapes(cfg).items()})


def _compiled(cfg: Any, key: tuple) -> Any:
    fn = build_core(cfg, CoreKind(key[0]))
    return fn.lower(_abstract_params(cfg), *abstract_inputs(cfg, key)).compile()


def _xla_flops(compiled: Any) -> float | None:
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 (backends without cost analysis)
        return None
    ca = ca[0] if isinstance(ca, (list, tuple)) and ca else ca
    if ca is None:
        return None
    return float(ca.get("flops", 0.0))  # an empty analysis: nothing to count (e.g. 0 layers)


def xla_costs(cfg: Any, shapes: dict[tuple, int]) -> dict[str, Any]:
    """XLA's cost analysis (FLOPs) and memory analysis of every compiled shape, weighted by how
    often each ran; None where the backend does not report them.

    XLA counts a while loop's body once, so the scanned layers would appear as one layer: the
    FLOPs are taken as X(0) + L * (X(2) - X(0)), each X from XLA's analysis of that shape compiled
    for the config with 0 and 2 layers (abstract weights): with 2 layers the scan stays a loop
    whose body (one layer) is counted once; a 1-layer scan is inlined and partly pruned."""
    flops: float | None = 0.0
    peak: int | None = 0
    for key, calls in shapes.items():
        x0 = _xla_flops(_compiled(cfg.replace(num_layers=0), key))
        x1 = _xla_flops(_compiled(cfg.replace(num_layers=2), key))
        if flops is not None and x0 is not None and x1 is not None:
            flops += calls * (x0 + cfg.num_layers * (x1 - x0))
        else:
            flops = None
        try:
            ma = _compiled(cfg, key).memory_analysis()
            peak = max(peak, ma.argument_size_in_bytes + ma.output_size_in_bytes
                       + ma.temp_size_in_bytes) if peak is not None else None
        except Exception:  # noqa: BLE001
            peak = None
    return {"xla_flops": flops, "xla_peak_bytes": peak}


__all__ = ["xla_costs"]
