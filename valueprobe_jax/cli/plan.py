"""`valueprobe plan`: memory per device of the registry's models, and the mesh to run them on.

    valueprobe plan --model llama-3.1-70b-instruct --mesh fsdp=4,tensor=2 --batch 8 --max-len 1024
    valueprobe plan --model all --batch 8 --max-len 1024 --json
"""

from __future__ import annotations

import argparse
import json

from valueprobe_jax.errors import InputError
from valueprobe_jax.parallel.plan import (ACCELERATORS, GiB, USABLE_FRACTION, MemoryPlan, compact_mesh,
                                 plan_memory, suggest_mesh)
from valueprobe_jax.parallel.sharding import mesh_spec_str, parse_mesh_spec


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("plan", help="memory per device and a mesh for every registry model",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", default="all", help="registry name, or 'all' (default)")
    p.add_argument("--mesh", default=None,
                   help="e.g. data=1,fsdp=4,tensor=2: also report bytes per device on this mesh")
    p.add_argument("--batch", type=int, default=8, help="rows per forward pass (global batch)")
    p.add_argument("--max-len", type=int, default=1024, help="tokens per row and KV-cache capacity")
    p.add_argument("--dtype", default="bfloat16", help="parameter/activation dtype (default bfloat16)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(func=run)
    return p


def _gib(n: float) -> str:
    return f"{n / GiB:.2f}"


def _fits_on(plan: MemoryPlan) -> str:
    same = [a for a in ACCELERATORS if a.chips == plan.devices]
    if not same:
        return f"(no listed accelerator has {plan.devices} devices)"
    return ", ".join(f"{a.name}: {'yes' if plan.fits(a) else 'no'}" for a in same)


def run(args: argparse.Namespace) -> int:
    from valueprobe_jax.models import registry

    specs = registry.list_specs() if args.model == "all" else [registry.get_spec(args.model)]
    mesh = parse_mesh_spec(args.mesh) if args.mesh else None
    if args.batch < 1 or args.max_len < 1:
        raise InputError(f"--batch {args.batch} / --max-len {args.max_len}: must be positive")
    out = []
    for spec in specs:
        cfg = spec.config
        given = (plan_memory(cfg, mesh, batch=args.batch, max_len=args.max_len, dtype=args.dtype,
                             name=spec.name) if mesh else None)
        sugg = {a.name: suggest_mesh(cfg, a, batch=args.batch, max_len=args.max_len,
                                     dtype=args.dtype, name=spec.name) for a in ACCELERATORS}
        out.append((spec.name, given, sugg))

    if args.json:
        print(json.dumps({
            "batch": args.batch, "max_len": args.max_len, "dtype": args.dtype,
            "usable_fraction": USABLE_FRACTION,
            "accelerators": [{"name": a.name, "chips": a.chips, "hbm_gib": a.hbm_gib, "hosts": a.hosts}
                             for a in ACCELERATORS],
            "models": [{"model": name, "mesh_plan": given.to_dict() if given else None,
                        "suggested": {k: (v.to_dict() if v else None) for k, v in sugg.items()}}
                       for name, given, sugg in out]}, indent=1))
        return 0

    print(f"Memory plan: batch {args.batch}, max-len {args.max_len}, {args.dtype}; GiB per device; "
          f"fits = total <= {USABLE_FRACTION:.0%} of device memory")
    print("(params and KV cache exact; activations = estimated peak of one scanned layer plus f32 "
          "logits at every position, see valueprobe_jax/plan.py)")
    w = max(len(n) for n, _, _ in out) + 2
    if mesh:
        print(f"\nOn mesh {mesh_spec_str(mesh)}:")
        print(f"{'model':<{w}}{'params':>8}{'weights':>9}{'KV':>7}{'act':>7}{'total':>8}  fits")
        for name, p, _ in out:
            print(f"{name:<{w}}{p.num_params / 1e9:>7.2f}B{_gib(p.params_bytes):>9}"
                  f"{_gib(p.kv_cache_bytes):>7}{_gib(p.activation_bytes):>7}{_gib(p.total_bytes):>8}"
                  f"  {_fits_on(p)}")
        if len(out) == 1 and out[0][1].fallbacks:
            print("replicated (not divisible):")
            for f in out[0][1].fallbacks:
                print(f"  {f}")
    print("\nSuggested mesh (smallest fsdp x tensor split that fits; total GiB per device; "
          "'-' = does not fit):")
    cw = 30
    print((f"{'model':<{w}}" + "".join(f"{a.label():<{cw}}" for a in ACCELERATORS)).rstrip())
    for name, _, sugg in out:
        cells = []
        for a in ACCELERATORS:
            s = sugg[a.name]
            cells.append("-" if s is None else f"{compact_mesh(s.mesh)} {_gib(s.total_bytes)}")
        print((f"{name:<{w}}" + "".join(f"{c:<{cw}}" for c in cells)).rstrip())
    multi = [a for a in ACCELERATORS if a.hosts > 1]
    if multi:
        print("On " + ", ".join(f"{a.name} ({a.hosts} hosts x {a.chips // a.hosts} chips)" for a in multi)
              + ": a suggestion whose fsdp x tensor fits one host's chips can also run per host (e.g. "
              "--mesh data=-1,tensor=4: hosts split the work items, no cross-host traffic); a larger "
              "split spans the hosts, which then run in lockstep.")
    if len(out) == 1:
        for a in ACCELERATORS:
            s = out[0][2][a.name]
            if s is not None and s.fallbacks:
                print(f"{a.name} with {compact_mesh(s.mesh)}: " + "; ".join(s.fallbacks))
    return 0
