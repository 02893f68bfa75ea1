"""`valueprobe plan`: memory per device of the registry's models, and the mesh to run them on.

    valueprobe plan --model llama-3.1-70b-instruct --mesh fsdp=4,tensor=2 --batch 8 --max-len 1024
    valueprobe plan --model all --batch 8 --max-len 1024 --json
    valueprobe plan --compile --model llama-3.1-8b --accelerator v5p-64 --mesh data=8,tensor=4

--compile lowers and compiles the engine's real programs (scoring core, prefill, decode step) on
abstract weights over simulated CPU devices and predicts the paper's sweep at the roofline
(valueprobe_jax/bench/compile_plan.py).
"""

from __future__ import annotations

import argparse
import json
import math

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
    p.add_argument("--compile", action="store_true",
                   help="compile the real programs on simulated devices; roofline and sweep time")
    p.add_argument("--accelerator", default="h100",
                   help="with --compile: " + ", ".join(a.short for a in ACCELERATORS))
    p.add_argument("--procedure", default="paper", help="with --compile: the sweep's procedure")
    p.add_argument("--configs", default="configs", help="with --compile: the sweep configs' folder")
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
    if args.compile:
        return run_compile(args)
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
              "split spans the hosts, which then run in lockstep. `plan --compile` predicts a sweep on the "
              "one-host suggestion where there is one, one replica per host.")
    if len(out) == 1:
        for a in ACCELERATORS:
            s = out[0][2][a.name]
            if s is not None and s.fallbacks:
                print(f"{a.name} with {compact_mesh(s.mesh)}: " + "; ".join(s.fallbacks))
    return 0


def run_compile(args: argparse.Namespace) -> int:
    """``plan --compile``: compile the real programs, print their costs and the sweep prediction."""
    from valueprobe_jax.bench import compile_plan as cp  # noqa: PLC0415
    from valueprobe_jax.models import registry  # noqa: PLC0415
    from valueprobe_jax.parallel.plan import get_accelerator  # noqa: PLC0415

    acc = get_accelerator(args.accelerator)
    if args.batch < 1 or args.max_len < 1:
        raise InputError(f"--batch {args.batch} / --max-len {args.max_len}: must be positive")
    names = ([s.name for s in registry.list_specs()] if args.model == "all"
             else [registry.get_spec(args.model).name])
    mesh = parse_mesh_spec(args.mesh) if args.mesh else None
    cp.simulate_devices(math.prod(mesh.values()) if mesh else acc.chips)  # before JAX starts
    work = cp.sweep_work(args.configs, names[0], args.procedure)
    shapes = cp.call_shapes(work, args.batch, args.max_len)
    preds, unfit = [], {}
    for n in names:
        try:
            preds.append(cp.predict(n, acc, work, shapes, mesh=args.mesh, dtype=args.dtype,
                                    memory=len(names) == 1))
        except InputError as e:  # with --model all: the others are still worth a prediction
            if len(names) == 1:
                raise
            unfit[n] = str(e)
    if not preds:
        raise InputError(f"--model all: no registry model fits {acc.name} "
                         f"({next(iter(unfit.values()))})")
    if args.json:
        print(json.dumps({"accelerator": acc.name, "shapes": shapes.__dict__,
                          "models": [_pred_dict(p, acc) for p in preds],
                          "not_fitting": unfit}, indent=1))
        return 0
    _print_compile(preds, work, shapes, acc, args)
    for reason in unfit.values():
        print(f"not predicted: {reason}")
    return 0


def _pred_dict(p, acc) -> dict:
    progs = [x for x in (p.programs.score, p.programs.prefill, p.programs.decode,
                         p.programs.rating_decode) if x is not None]
    return {"model": p.model, "mesh": p.mesh, "replicas": p.replicas, "shapes": p.shapes.__dict__,
            "programs": [{"name": x.name, "shape": x.shape, "flops": x.flops, "bytes": x.bytes,
                          "memory": x.memory, "roofline_s": x.seconds(acc)} for x in progs],
            "chunk_s": p.chunk.seconds, "sweep_s": p.sweep_seconds}


def _hours(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 360 else f"{s:.1f} s"


def _print_compile(preds, work, shapes, acc, args) -> None:
    from valueprobe_jax.bench.compile_plan import CHARS_PER_TOKEN  # noqa: PLC0415

    p0 = preds[0]
    devices = math.prod(p0.mesh.values()) if p0.mesh else 1
    print(f"Compiled on {devices} simulated CPU device(s), {args.dtype}, abstract weights; "
          f"{acc.label()}: {acc.peak_tflops:g} TFLOP/s bf16, {acc.hbm_gbps:g} GB/s HBM per chip")
    for p in preds if len(preds) == 1 else []:
        print(f"\n{p.model} on mesh {compact_mesh(p.mesh)} x {p.replicas} replica(s); "
              "per device and call:")
        print(f"{'program':<20}{'shape':<38}{'GFLOP':>10}{'GB':>8}{'arg GiB':>9}{'out GiB':>9}"
              f"{'temp GiB':>9}{'roofline':>11}  bound")
        for x in (p.programs.score, p.programs.prefill, p.programs.decode, p.programs.rating_decode):
            if x is None:
                continue
            m = x.memory or {}
            mem = "".join(f"{_gib(m[k]) if k in m else '-':>9}" for k in ("argument", "output", "temp"))
            print(f"{x.name:<20}{x.shape:<38}{x.flops / 1e9:>10.1f}{x.bytes / 1e9:>8.2f}{mem}"
                  f"{x.seconds(acc) * 1e3:>9.2f}ms  {x.bound(acc)}")
        c = p.chunk
        print(f"One chunk of {work[0].chunk_size} probes: {c.score_calls:g} score calls, "
              f"{c.prefill_calls:g} prefill, {c.decode_steps:g} decode steps -> "
              + ", ".join(f"{k} {v:.2f} s" for k, v in c.seconds.items()) + f" = {c.total:.2f} s")
    print(f"\nPredicted sweep at the roofline (procedure {args.procedure}; one replica's chunks "
          "/ replicas):")
    head = "".join(f"{w.experiment:>18}" for w in work)
    print(f"{'model':<28}{'mesh':<18}{head}{'total':>12}")
    for p in preds:
        cells = "".join(f"{_hours(p.experiments[w.experiment].total / p.replicas):>18}" for w in work)
        print(f"{p.model:<28}{compact_mesh(p.mesh) + f' x{p.replicas}':<18}{cells}"
              f"{_hours(p.sweep_seconds):>12}")
    if len(preds) > 1:
        print(f"the {len(preds)} models above: {_hours(sum(p.sweep_seconds for p in preds))}")
    print("\nAssumptions:")
    for w in work:
        print(f"  {w.experiment}: {w.probes} probes + {w.ratings} ratings in {w.chunks} chunks of "
              f"{w.chunk_size} ({args.configs}/{w.experiment}.py:MODEL,{args.procedure} through "
              f"runner.plan_sweep); text: {w.samples} samples x {w.new_tokens} tokens; ratings: "
              f"{w.rating_samples} x {w.rating_new_tokens} tokens")
    w0 = work[0]
    print(f"  tokens = characters / {CHARS_PER_TOKEN:g} of the prompts rendered without a chat "
          f"template (no tokenizer read): probe prompt {w0.prompt_tokens:.0f}, its options "
          f"{w0.option_tokens:.0f}, rating prompt {max(w.rating_tokens for w in work):.0f} (means)")
    print(f"  scoring: packed rows of {shapes.max_len} tokens x {shapes.batch} (tree core, perfect "
          f"packing, no shared-prefix reuse); prefill: {shapes.prompts} prompts of "
          f"{shapes.prompt_len} slots per decode call; decode: {shapes.rows} rows (the Sampler's "
          "defaults) per batch shard (data x fsdp) of the mesh, at most a call's samples "
          f"({', '.join(sorted({f'{p.shapes.rows} on {compact_mesh(p.mesh)}' for p in preds}))}); "
          "every sample runs to its token cap: an upper bound on decode steps (samples that stop "
          "early, e.g. at an end-of-turn token, take fewer)")
    print("  efficiency = the roofline (max of FLOPs / peak, bytes / HBM bandwidth per call, XLA's "
          "counts of the CPU-compiled program): a lower bound for these calls; no host, launch or "
          "collective time; replicas split chunks evenly; CPU XLA's bytes (its fusion) stand in for "
          "the accelerator's")
