"""Where a decode step's time goes: one ``models.decode.decode_step`` of a model at a row count,
timed (best of ``--repeats``), then traced with ``jax.profiler``; the trace's events are summed
per step and each is named with its HLO output shape and a category.

    python -m valueprobe_jax.bench.decode_profile [--model smollm2-135m-instruct]
        [--rows 4 64] [--prompts 32] [--prompt-len 128] [--layouts stacked per_layer]

The prompt part holds ``--prompts`` prompts of ``--prompt-len`` slots and every row has a full
ring of ``max_new_tokens - 1`` generated slots (random keys/values: the cost does not depend on
them). Layouts of the layer weights: ``stacked`` (the shipped program: a scan over the stacked
layers, so XLA slices each layer's weights out of the stack at every step), ``per_layer`` (one
buffer per layer, the layer loop unrolled: no slice copies) and ``unrolled`` (stacked, unrolled).

Like the ``valueprobe`` command it applies ``xla_flags.CPU_DEFAULTS`` first; set ``$XLA_FLAGS``
to compare (``--xla_cpu_enable_concurrency_optimized_scheduler=true`` is XLA's own default).
XLA:CPU's runtime names each trace event after the HLO op it runs, which is what the categories
read; on other backends events carry kernel names and fall under "other". The ops of a step overlap
on the CPU's threads, so their times can sum to more than the step's wall time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import gzip
import json
import os
import pathlib
import re
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Iterator
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from valueprobe_jax import xla_flags
from valueprobe_jax.bench.machine import (best_time, load_average, machine_info,
                                          matmul_peak_gflops)
from valueprobe_jax.engine.flops import flops_estimate
from valueprobe_jax.models import decode as decode_mod
from valueprobe_jax.models.checkpoints import load_model
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.layers import Params, unrolled_layers

LAYOUTS = ("stacked", "per_layer", "unrolled")
CATEGORIES = ("weight matmul", "attention", "layer slice copy", "gather", "other")


def step_inputs(cfg: ModelConfig, params: Params, rows: int, prompts: int, prompt_len: int,
                ring: int, seed: int = 0) -> tuple[Any, ...]:
    """The arguments of ``decode_step`` for ``rows`` rows over ``prompts`` prompts."""
    rng = np.random.default_rng(seed)
    n, kv, d, dt = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, cfg.jnp_dtype

    def rand(*shape: int) -> jax.Array:
        return jnp.asarray(rng.standard_normal(shape), dt)

    cache = decode_mod.SplitCache(
        rand(n, prompts, kv, d, prompt_len), rand(n, prompts, kv, prompt_len, d),
        jnp.full((prompts,), prompt_len, jnp.int32), rand(n, rows, kv, d, ring),
        rand(n, rows, kv, ring, d))
    return (params, jnp.asarray(rng.integers(0, cfg.vocab_size, rows), jnp.int32),
            jnp.asarray(rng.integers(0, prompts, rows), jnp.int32),
            jnp.full((rows,), prompt_len + ring, jnp.int32), jnp.ones((rows, ring), bool),
            jnp.tile(prompt_len + jnp.arange(ring)[None], (rows, 1)), cache)


def _per_layer_scan(body: Any, carry: Any, xs: Any, unroll: Any = 1) -> tuple[Any, Any]:
    """``scan_layers`` over a list of per-layer weight dicts (``xs[0]``), unrolled."""
    layers, *rest = xs
    ys = []
    for i, lp in enumerate(layers):
        carry, y = body(carry, (lp, *[r[i] for r in rest]))
        ys.append(y)
    return carry, jax.tree.map(lambda *a: jnp.stack(a), *ys)


@contextlib.contextmanager
def _layout(name: str) -> Iterator[None]:
    if name == "per_layer":
        with mock.patch.object(decode_mod, "scan_layers", _per_layer_scan):
            yield
    elif name == "unrolled":
        with unrolled_layers():
            yield
    else:
        yield


def compiled_step(cfg: ModelConfig, args: tuple[Any, ...], layout: str) -> tuple[Any, tuple]:
    """The compiled decode step in ``layout`` and its arguments (per_layer: the weights split
    into one buffer per layer, once, outside the step)."""
    if layout == "per_layer":
        params = dict(args[0])
        params["layers"] = [jax.tree.map(lambda a, i=i: a[i], args[0]["layers"])
                            for i in range(cfg.num_layers)]
        args = (params, *args[1:])
    with _layout(layout):
        fn = jax.jit(functools.partial(decode_mod.decode_step, cfg)).lower(*args).compile()
    return fn, args


def op_shapes(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> its output shape (``f32[64,1536]``), from ``compiled.as_text()``."""
    out = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", hlo_text, re.MULTILINE):
        out[m.group(1)] = m.group(2)
    return out


def category(name: str, shape: str, rows: int) -> str:
    """What an XLA:CPU op of the decode step does, from its name and output shape: a dot
    (``ynn``/``dot``/``onednn`` fusion) with a [rows, N] output multiplies by weights (the
    projections, the MLP, the LM head), a dot with a higher-rank output is attention."""
    m = re.search(r"\[([\d,]*)\]", shape)
    dims = m.group(1).split(",") if m and m.group(1) else []
    if re.match(r"(ynn|xnn|onednn|dot|custom-call|cublas|gemm)", name):
        return "weight matmul" if len(dims) == 2 and int(dims[0]) == rows else "attention"
    if name.startswith("dynamic-slice"):
        return "layer slice copy"
    if "gather" in name or name.startswith(("broadcast_select", "bitcast_select")):
        return "gather"
    return "other"


def trace_ops(fn: Any, args: tuple[Any, ...], steps: int) -> dict[str, float]:
    """Seconds per step of every traced event of ``steps`` calls (outer runtime events left
    out)."""
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d, create_perfetto_trace=True)
        for _ in range(steps):
            jax.block_until_ready(fn(*args))
        jax.profiler.stop_trace()
        (path,) = pathlib.Path(d).rglob("*.trace.json.gz")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total: dict[str, float] = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and not re.search(r"[:$ (]|^Pjit|^while", name):
            total[name] += e.get("dur", 0) / 1e6 / steps
    return dict(total)


def profile(cfg: ModelConfig, params: Params, rows: int, *, prompts: int, prompt_len: int,
            ring: int, layout: str, repeats: int = 10, trace_steps: int = 5) -> dict[str, Any]:
    """Wall time, FLOP rate and per-op table of one decode step."""
    t0 = time.perf_counter()
    fn, args = compiled_step(cfg, step_inputs(cfg, params, rows, prompts, prompt_len, ring),
                             layout)
    compile_s = time.perf_counter() - t0
    wall = best_time(lambda: jax.block_until_ready(fn(*args)), repeats)
    shapes = op_shapes(fn.as_text())
    ops = []
    for name, s in sorted(trace_ops(fn, args, trace_steps).items(), key=lambda kv: -kv[1]):
        shape = shapes.get(name, "")
        ops.append({"op": name, "shape": shape, "s": s, "category": category(name, shape, rows)})
    by_cat = {c: sum(o["s"] for o in ops if o["category"] == c) for c in CATEGORIES}
    flops = flops_estimate(cfg, rows, 1, prompt_len + ring + 1, 1)
    return {"rows": rows, "layout": layout, "compile_s": compile_s, "wall_s": wall,
            "flops": flops, "gflops_per_s": flops / wall / 1e9, "by_category": by_cat,
            "ops": ops}


def format_profile(p: dict[str, Any], peak: float, top: int) -> str:
    lines = [f"rows {p['rows']}, {p['layout']}: {p['wall_s'] * 1e3:.1f} ms/step (best), "
             f"{p['gflops_per_s']:.1f} GFLOP/s = {p['gflops_per_s'] / peak:.0%} of the matmul "
             f"peak; compiled in {p['compile_s']:.1f} s",
             "  by category (ms/step, summed over threads): " + ", ".join(
                 f"{c} {s * 1e3:.1f}" for c, s in p["by_category"].items())]
    for o in p["ops"][:top]:
        lines.append(f"  {o['s'] * 1e3:8.2f} ms  {o['category']:<17} {o['shape']:<24} {o['op']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rows", type=int, nargs="+", default=[4, 64])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=["stacked", "per_layer"])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--top", type=int, default=12, help="ops listed per profile")
    ap.add_argument("--json", default=None, help="also write every profile here")
    args = ap.parse_args(argv)
    xla_flags.apply_cpu_defaults()  # as the valueprobe command runs; $XLA_FLAGS overrides
    model = load_model(args.model)
    peak = matmul_peak_gflops()
    print(f"{model.name} ({model.cfg.dtype}) on {machine_info()['cpu']}, load {load_average()}, "
          f"matmul peak {peak:.1f} GFLOP/s; {args.prompts} prompts x {args.prompt_len} slots, "
          f"{args.max_new_tokens - 1} generated slots per row; XLA_FLAGS "
          f"{os.environ.get(xla_flags.ENV, '')!r}")
    results = []
    for rows in args.rows:
        for layout in args.layouts:
            p = profile(model.cfg, model.params, rows, prompts=args.prompts,
                        prompt_len=args.prompt_len, ring=args.max_new_tokens - 1, layout=layout,
                        repeats=args.repeats)
            results.append(p)
            print(format_profile(p, peak, args.top), flush=True)
    print(f"load at the end {load_average()}")
    if args.json:
        from valueprobe_jax import io

        io.write_json(args.json, {"peak_gflops": peak, "profiles": results})


if __name__ == "__main__":
    main()
