"""`valueprobe plan --compile`: the engine's real jitted programs at real scale, without weights.

The scoring core (``engine.cores``, packed rows), the sampler's prefill and one step of its decode
loop (``engine.sampler`` / ``engine.decode_loop``) are lowered with abstract parameters
(ShapeDtypeStructs: nothing is read) and the shardings the engine uses on a mesh of simulated
CPU devices, and compiled. From the executables: FLOPs and bytes accessed per call and device
(XLA's cost analysis, scanned layers counted as in ``xla_cost``), and per-device memory (memory
analysis). With an accelerator's peak FLOP/s and HBM bandwidth these give the roofline time of
each call (max of FLOPs / peak, bytes / bandwidth), of one sweep chunk and of the paper's sweep
(``sweep_work``: its work counted from the project's configs).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
from typing import Any, Callable

from valueprobe_jax import xla_flags
from valueprobe_jax.errors import InputError

DEVICE_FLAG = "xla_force_host_platform_device_count"


def simulate_devices(n: int) -> None:
    """Ask for ``n`` simulated CPU devices (before JAX's backend starts: sets XLA_FLAGS and
    JAX_PLATFORMS=cpu); once it has started, check that it has at least ``n``."""
    if xla_flags.set_flag(DEVICE_FLAG, str(n), override=True):
        os.environ["JAX_PLATFORMS"] = "cpu"
        return
    import jax  # noqa: PLC0415

    if jax.device_count() < n:
        raise InputError(f"--compile: the mesh needs {n} devices but JAX already started with "
                         f"{jax.device_count()} ({jax.devices()[0].platform})")


# --------------------------------------------------------------------------- compiled costs

@dataclasses.dataclass(frozen=True)
class ProgramCost:
    """One compiled program: XLA's FLOPs and bytes accessed per call and device, and its
    per-device memory (argument, output, temp bytes; None where XLA does not report it)."""

    name: str
    shape: str
    flops: float
    bytes: float
    memory: dict[str, int] | None = None

    def seconds(self, acc: Any) -> float:
        """Roofline time of one call on ``acc`` (max of the compute and the memory time)."""
        return max(self.flops / (acc.peak_tflops * 1e12), self.bytes / (acc.hbm_gbps * 1e9))

    def bound(self, acc: Any) -> str:
        return ("compute" if self.flops / (acc.peak_tflops * 1e12)
                >= self.bytes / (acc.hbm_gbps * 1e9) else "memory")


def _memory(cfg: Any, compile_for: Callable[[Any], Any]) -> dict[str, int] | None:
    """Per-device memory of the full-depth program: argument and output bytes of its bf16 (the
    config's dtype) compile; temp bytes of its float32 compile. XLA on the CPU has no native
    bf16 matmul and hoists a float32 copy of the whole layer stack into temp, which an
    accelerator does not make; the float32 temp (activations in f32) bounds the bf16 one."""
    from valueprobe_jax.bench.xla_cost import memory_bytes  # noqa: PLC0415

    mem = memory_bytes(compile_for(cfg))
    if mem is None:
        return None
    if cfg.dtype != "float32":
        f32 = memory_bytes(compile_for(cfg.replace(dtype="float32")))
        mem["temp"] = f32["temp"] if f32 else mem["temp"]
    return mem


def _counted(cfg: Any, compile_for: Callable[[Any], Any], unrolled: bool = False
             ) -> tuple[float, float]:
    """(FLOPs, bytes) of ``cfg``'s program from its float32 compiles, bytes scaled to ``cfg``'s
    dtype: XLA on the CPU has no native bf16 matmul, so a bf16 program converts every weight to
    float32 (reads bf16, writes and reads f32) and its byte count would be ~3x an accelerator's;
    the float32 program's bytes x itemsize / 4 stand in (float32 softmax and norms then count
    half: a slight undercount)."""
    import numpy as np  # noqa: PLC0415

    from valueprobe_jax.bench.xla_cost import layer_extrapolated  # noqa: PLC0415

    flops, nbytes = layer_extrapolated(cfg.replace(dtype="float32"), compile_for,
                                       unrolled=unrolled)
    if flops is None or nbytes is None:
        raise InputError("--compile: this JAX backend reports no cost analysis")
    return flops, nbytes * np.dtype(cfg.jnp_dtype).itemsize / 4


def _cost(name: str, shape: str, cfg: Any, compile_for: Callable[[Any], Any],
          memory: bool) -> ProgramCost:
    flops, nbytes = _counted(cfg, compile_for)
    return ProgramCost(name, shape, flops, nbytes, _memory(cfg, compile_for) if memory else None)


def score_cost(cfg: Any, mesh: Any, b: int, t: int, m: int, *, memory: bool = True) -> ProgramCost:
    """The packed scoring core (``CoreKind.TREE``) on ``b`` rows of ``t`` tokens with ``m`` LM-head
    positions and reads per row, sharded as the Scorer shards it."""
    from valueprobe_jax.bench.xla_cost import abstract_params  # noqa: PLC0415
    from valueprobe_jax.engine.cores import CoreKind, abstract_inputs, sharded_core  # noqa: PLC0415

    def compile_for(c: Any) -> Any:
        fn = sharded_core(c, mesh, CoreKind.TREE, b, t, m, m).fn
        return fn.lower(abstract_params(c), *abstract_inputs(c, ("tree", b, t, t, m, m))).compile()

    return _cost("score", f"[{b},{t}] heads {m}", cfg, compile_for, memory)


def prefill_cost(cfg: Any, mesh: Any, prompts: int, p: int, *, memory: bool = True) -> ProgramCost:
    """The sampler's prefill of ``prompts`` prompts of ``p`` slots."""
    import jax  # noqa: PLC0415

    from valueprobe_jax.bench.xla_cost import abstract_params  # noqa: PLC0415
    from valueprobe_jax.engine.decode_loop import make_prefill_fn  # noqa: PLC0415
    from valueprobe_jax.engine.sampler import prefill_shardings  # noqa: PLC0415

    def compile_for(c: Any) -> Any:
        ins, outs = prefill_shardings(c, mesh, prompts, p)
        fn = make_prefill_fn(c, in_shardings=ins, out_shardings=outs)
        i32 = jax.numpy.int32
        return fn.lower(abstract_params(c), jax.ShapeDtypeStruct((prompts, p), i32),
                        jax.ShapeDtypeStruct((prompts,), i32)).compile()

    return _cost("prefill", f"[{prompts},{p}]", cfg, compile_for, memory)


def decode_step_cost(cfg: Any, mesh: Any, *, prompts: int, p: int, samples: int, new_tokens: int,
                     rows: int, name: str = "decode step", memory: bool = True) -> ProgramCost:
    """One step of the sampler's decode loop on ``rows`` rows: the program with two unrolled
    steps less the one with one (``decode_loop.decode_steps``; XLA counts a while body once),
    layers counted with ``xla_cost``'s unrolled form (a 0-layer decode program loses its rows'
    sharding). Memory: the real decode loop program (``decode_loop.decode``) at full depth."""
    from valueprobe_jax.bench.xla_cost import abstract_params  # noqa: PLC0415
    from valueprobe_jax.engine.decode_loop import make_decode_fn  # noqa: PLC0415
    from valueprobe_jax.engine.sampler import abstract_decode_inputs, decode_shardings  # noqa: PLC0415

    def compile_for(c: Any, steps: int | None) -> Any:
        kw = decode_shardings(c, mesh, new_tokens, samples, rows, prompts, p)
        fn = make_decode_fn(c, new_tokens, samples, rows, steps=steps, **kw)
        return fn.lower(abstract_params(c), *abstract_decode_inputs(c, prompts, p)).compile()

    one = _counted(cfg, lambda c: compile_for(c, 1), unrolled=True)
    two = _counted(cfg, lambda c: compile_for(c, 2), unrolled=True)
    mem = _memory(cfg, lambda c: compile_for(c, None)) if memory else None
    return ProgramCost(name, f"{rows} rows, {prompts}x{samples} samples, prompt {p}",
                       two[0] - one[0], two[1] - one[1], mem)


# --------------------------------------------------------------------------- the sweep's work

CHARS_PER_TOKEN = 4.0  # assumed: English text under a Llama-3 / Qwen BPE (no tokenizer is read)
EXPERIMENTS = ("robustness", "demographic", "action_agreement")


@dataclasses.dataclass(frozen=True)
class ExperimentWork:
    """What one experiment's sweep does (one model), counted from its config and data."""

    experiment: str
    probes: int
    ratings: int
    chunks: int
    chunk_size: int
    samples: int
    new_tokens: int
    rating_samples: int
    rating_new_tokens: int
    prompt_tokens: float  # mean probe prompt tokens
    option_tokens: float  # mean option-continuation tokens per probe (all options)
    heads: float  # mean LM-head positions per probe (1 + option tokens)
    rating_tokens: float  # mean rating prompt tokens
    probe_chunks: list[int]  # probes per chunk
    rating_chunks: list[int]  # ratings per chunk


def _tokens(text: str) -> float:
    return len(text) / CHARS_PER_TOKEN


def experiment_work(spec: str, overrides: tuple[str, ...] = ()) -> ExperimentWork:
    """The work of one sweep config ``FILE.py:ARG``: its items (``runner.plan_sweep``: the
    question bank, styles x variants x countries, the released scenarios) and their prompts'
    lengths (rendered without a chat template, ``CHARS_PER_TOKEN`` characters a token)."""
    from valueprobe_jax.experiments.config_loading import load_config  # noqa: PLC0415
    from valueprobe_jax.experiments.runner import plan_sweep  # noqa: PLC0415
    from valueprobe_jax.experiments.sweep import chunk_items  # noqa: PLC0415
    from valueprobe_jax.probing.prompts import build_prompt  # noqa: PLC0415
    from valueprobe_jax.probing.ratings import rating_messages  # noqa: PLC0415

    c = load_config(spec, list(overrides))
    plan = plan_sweep(c)
    p_tok, o_tok, heads, r_tok = [], [], [], []
    for it in plan.items:
        if it.kind == "probe":
            pr = build_prompt(plan.questions[it.qid], it.style, it.variant, it.country,
                              seed=c.probe.shuffle_seed)
            p_tok.append(_tokens("".join(m["content"] for m in pr.messages)
                                 + (pr.assistant_prefix or "")))
            opts = [max(1.0, _tokens(a)) for a in pr.answers_original]
            o_tok.append(sum(opts))
            heads.append(1 + sum(opts))
        else:
            sc = plan.scenarios[it.scenario_id]
            action = sc.action_a if it.action == "A" else sc.action_b
            r_tok.append(_tokens(rating_messages(sc.situation, action, it.template)[0]["content"]))
    chunks = chunk_items(plan.items, c.run.chunk_size)

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    return ExperimentWork(
        c.experiment, len(p_tok), len(r_tok), len(chunks), c.run.chunk_size,
        c.probe.samples if "text" in c.probe.methods else 0, c.probe.max_new_tokens,
        c.actions.samples, c.actions.max_new_tokens, mean(p_tok), mean(o_tok), mean(heads),
        mean(r_tok), [sum(it.kind == "probe" for it in ch) for ch in chunks],
        [sum(it.kind == "rating" for it in ch) for ch in chunks])


def sweep_work(configs_dir: str, model: str, procedure: str) -> list[ExperimentWork]:
    """The paper's whole sweep for ``model``: robustness, demographic and action agreement."""
    out = []
    for exp in EXPERIMENTS:
        path = os.path.join(configs_dir, f"{exp}.py")
        if not os.path.isfile(path):
            raise InputError(f"--configs {configs_dir}: no {exp}.py (the sweep's configs)")
        out.append(experiment_work(f"{path}:{model},{procedure}"))
    return out


def sampler_defaults() -> tuple[int, int]:
    """(decode rows, prompts per decode call): the Sampler's defaults, as the engine builds it."""
    from valueprobe_jax.engine.sampler import Sampler  # noqa: PLC0415

    ps = inspect.signature(Sampler.__init__).parameters
    return ps["max_batch"].default, ps["max_prompts"].default


# --------------------------------------------------------------------------- the prediction

@dataclasses.dataclass(frozen=True)
class Programs:
    """The compiled programs of one model on one mesh."""

    score: ProgramCost
    prefill: ProgramCost
    decode: ProgramCost  # one step of the text method's loop
    rating_decode: ProgramCost | None  # one step of the ratings' loop


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The call shapes the prediction compiles: scoring rows, prefill, both decode loops."""

    batch: int
    max_len: int
    heads: int
    prompts: int
    prompt_len: int
    rows: int
    samples: int
    new_tokens: int
    rating_rows: int
    rating_samples: int
    rating_new_tokens: int


def call_shapes(work: list[ExperimentWork], batch: int, max_len: int, ways: int = 1) -> Shapes:
    """Shapes of the engine's calls for this sweep: scoring rows of ``max_len`` tokens packing
    whole probes, LM-head positions per row rounded up to 8; prefill of a decode call's prompts
    at the sampler's bucket of the longest mean prompt; decode rows and prompts per call as the
    Sampler picks them on a mesh of ``ways`` batch shards (``sharding.batch_ways``)."""
    from valueprobe_jax.engine.sampler import prompt_bucket  # noqa: PLC0415

    rows, prompts = (n * ways for n in sampler_defaults())
    probe = [w for w in work if w.probes]
    per_probe = max(w.prompt_tokens + w.option_tokens for w in probe)
    heads = max(w.heads for w in probe)
    per_row = max(1, int(max_len // per_probe))
    m = 8 * math.ceil(per_row * heads / 8)
    p = prompt_bucket(math.ceil(max(max(w.prompt_tokens, w.rating_tokens) for w in work)))
    w0 = probe[0]
    slots = 1 << (min(prompts, w0.chunk_size) - 1).bit_length()
    rated = [w for w in work if w.ratings]
    rs = rated[0].rating_samples if rated else 1
    return Shapes(batch, max_len, m, slots, p, min(rows, slots * w0.samples), w0.samples,
                  w0.new_tokens, min(rows, slots * rs), rs,
                  rated[0].rating_new_tokens if rated else 0)


@functools.lru_cache(maxsize=None)
def compile_programs(cfg: Any, mesh_spec: str, shapes: Shapes, memory: bool = True) -> Programs:
    """Compile the engine's programs for ``cfg`` on a mesh of simulated devices (cached per
    config: the base and instruct models of a family share one)."""
    from valueprobe_jax.parallel.sharding import make_mesh, parse_mesh_spec  # noqa: PLC0415
    import jax  # noqa: PLC0415

    n = math.prod(parse_mesh_spec(mesh_spec).values())
    mesh = make_mesh(mesh_spec, devices=jax.devices()[:n])
    s = shapes
    score = score_cost(cfg, mesh, s.batch, s.max_len, s.heads, memory=memory)
    prefill = prefill_cost(cfg, mesh, s.prompts, s.prompt_len, memory=memory)
    decode = decode_step_cost(cfg, mesh, prompts=s.prompts, p=s.prompt_len, samples=s.samples,
                              new_tokens=s.new_tokens, rows=s.rows, memory=memory)
    rating = None
    if s.rating_new_tokens > 1:
        rating = decode_step_cost(cfg, mesh, prompts=s.prompts, p=s.prompt_len,
                                  samples=s.rating_samples, new_tokens=s.rating_new_tokens,
                                  rows=s.rating_rows, name="rating decode step", memory=False)
    return Programs(score, prefill, decode, rating)


@dataclasses.dataclass(frozen=True)
class ChunkTime:
    """Roofline seconds of the calls of some chunks, by program, and the calls counted."""

    score_calls: float
    prefill_calls: float
    decode_steps: float
    rating_steps: float
    seconds: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def chunks_time(work: ExperimentWork, progs: Programs, shapes: Shapes, acc: Any,
                chunks: range | None = None) -> ChunkTime:
    """Roofline time of ``chunks`` (default all) of an experiment: scored tokens packed
    perfectly into rows, every sample running to its token cap (the loop's longest case), one
    prefill call per decode call."""
    s = shapes
    per_probe = work.prompt_tokens + work.option_tokens
    score = prefill = steps = rsteps = 0.0
    for i in chunks if chunks is not None else range(work.chunks):
        n, r = work.probe_chunks[i], work.rating_chunks[i]
        tokens = n * per_probe + r * work.rating_tokens
        score += math.ceil(tokens / (s.batch * s.max_len))
        prefill += math.ceil(n / s.prompts) + math.ceil(r / s.prompts)
        if work.samples:
            steps += math.ceil(n * work.samples * (work.new_tokens - 1) / s.rows)
        if r and progs.rating_decode is not None:
            rsteps += math.ceil(r * work.rating_samples * (work.rating_new_tokens - 1) / s.rating_rows)
    secs = {"score": score * progs.score.seconds(acc), "prefill": prefill * progs.prefill.seconds(acc),
            "decode": steps * progs.decode.seconds(acc)}
    if progs.rating_decode is not None:
        secs["rating decode"] = rsteps * progs.rating_decode.seconds(acc)
    return ChunkTime(score, prefill, steps, rsteps, secs)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One model's compiled programs on its mesh and the roofline time of the paper's sweep."""

    model: str
    mesh: dict[str, int]
    replicas: int  # copies of the mesh on the accelerator, each running its own chunks
    shapes: Shapes  # the calls compiled (decode rows per batch shard of the mesh)
    programs: Programs
    chunk: ChunkTime  # the first full chunk of probes (robustness)
    experiments: dict[str, ChunkTime]  # every chunk of each experiment, one replica

    @property
    def sweep_seconds(self) -> float:
        """The whole sweep with the replicas splitting the chunks evenly."""
        return sum(t.total for t in self.experiments.values()) / self.replicas


def predict(model: str, acc: Any, work: list[ExperimentWork], shapes: Shapes, *,
            mesh: str | None = None, dtype: str = "bfloat16", memory: bool = True) -> Prediction:
    """Compile ``model``'s programs on ``mesh`` (default: ``plan.suggest_run_mesh`` for ``acc``)
    and predict its sweep on ``acc``. Only meshes ``valueprobe run`` can run are taken: over all
    chips, or over one host's chips with one replica per host (``plan.mesh_replicas``)."""
    from valueprobe_jax.models import registry  # noqa: PLC0415
    from valueprobe_jax.parallel.plan import mesh_replicas, suggest_run_mesh  # noqa: PLC0415
    from valueprobe_jax.parallel.sharding import (batch_ways, mesh_spec_str,  # noqa: PLC0415
                                                  parse_mesh_spec)

    spec = registry.get_spec(model)
    cfg = spec.config.replace(dtype=dtype)
    if mesh is None:
        found = suggest_run_mesh(cfg, acc, batch=shapes.batch, max_len=shapes.max_len, name=model)
        if found is None:
            raise InputError(f"{model}: no mesh of {acc.name} fits it at --batch {shapes.batch} "
                             f"--max-len {shapes.max_len}")
        shape, replicas = found[0].mesh, found[1]
    else:
        shape = parse_mesh_spec(mesh)
        try:
            replicas = mesh_replicas(acc, math.prod(shape.values()))
        except InputError as e:
            raise InputError(f"--mesh {mesh_spec_str(shape)}: {e}") from None
    devices = math.prod(shape.values())
    simulate_devices(devices)
    shapes = call_shapes(work, shapes.batch, shapes.max_len, batch_ways(shape))
    progs = compile_programs(cfg, mesh_spec_str(shape), shapes, memory)
    first = next(w for w in work if w.probes)
    full = next((i for i, n in enumerate(first.probe_chunks) if n == first.chunk_size), 0)
    return Prediction(model, shape, replicas, shapes, progs,
                      chunks_time(first, progs, shapes, acc, range(full, full + 1)),
                      {w.experiment: chunks_time(w, progs, shapes, acc) for w in work})


__all__ = ["DEVICE_FLAG", "simulate_devices", "ProgramCost", "score_cost", "prefill_cost",
           "decode_step_cost", "CHARS_PER_TOKEN", "EXPERIMENTS", "ExperimentWork",
           "experiment_work", "sweep_work", "sampler_defaults", "Programs", "Shapes",
           "call_shapes", "compile_programs", "ChunkTime", "chunks_time", "Prediction", "predict"]
