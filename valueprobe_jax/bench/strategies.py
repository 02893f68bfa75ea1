"""Benchmarks of option scoring and generation (``valueprobe bench``).

Two comparisons on the same rendered WVS prompts, in one process and one run:

1. The scoring strategies of ``engine.scorer`` (naive, padded, packed, prefix_cache): tokens
   processed against the minimum (every distinct token in its context once), FLOPs (our model
   count and XLA's cost analysis of the compiled shapes), wall time per prompt after a warm-up run
   that compiles every shape, peak memory (process RSS sampled during the timed run; XLA's
   per-executable buffer sizes), compile count, and ratios to ``naive``.
2. The paper's procedure as an independent Hugging Face PyTorch implementation (one forward for
   the label logits and one full forward per option; ``generate`` with ``num_return_sequences``)
   against ours (packed / prefix_cache scoring; ``engine.Sampler``), with speedups and achieved
   GFLOP/s against matmul peaks measured in the same run.
3. lm-evaluation-harness's HF backend (HFLM) on the same seq-method token requests, at its best
   of a few batch sizes: time per prompt, our speedup, and the largest option log-likelihood
   difference.

This module is the run; beside it: ``machine`` (CPU, load, matmul peak), ``memory`` (RSS
monitor), ``xla_cost`` (XLA's cost analysis), ``hf_driver`` (the PyTorch subprocesses:
``hf_reference``, ``lmeval_peer``), ``table`` and ``plot`` (output). Timings depend on the machine and on what else runs on it: the JSON records
the CPU model, core count and load average at the start and end.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from valueprobe_jax.bench.hf_driver import (LMEVAL_BATCH_SIZES, as_results, run_hf_reference,
                                            run_lmeval_peer)
from valueprobe_jax.bench.machine import load_average, machine_info, matmul_peak_gflops
from valueprobe_jax.bench.memory import RssMonitor, device_peak_bytes
from valueprobe_jax.bench.xla_cost import xla_costs
from valueprobe_jax.data.questions import load_question_bank
from valueprobe_jax.engine import (STRATEGIES, Sampler, SamplingParams, Scorer, ScoreRequest,
                                   ScoreResult)
from valueprobe_jax.engine.flops import flops_estimate
from valueprobe_jax.engine.packing import min_token_count
from valueprobe_jax.engine.requests import encode_request
from valueprobe_jax.errors import InputError
from valueprobe_jax.models.checkpoints import load_model
from valueprobe_jax.probing import prompts as P

# ----------------------------------------------------------------------------- inputs


def bench_prompts(tokenizer: Any, questions: Sequence[Any], styles: Sequence[str], *,
                  instruct: bool = True) -> list[tuple[ScoreRequest, int]]:
    """(request, number of options) for every question x style, rendered with ``prompts.py``
    (baseline option variant)."""
    out = []
    for q in questions:
        for style in styles:
            pr = P.build_prompt(q, style, "baseline")
            req = ScoreRequest(pr.key, P.render(pr, tokenizer, instruct=instruct),
                                 P.option_continuations(pr, tokenizer, instruct=instruct),
                                 list(pr.labels))
            out.append((req, len(pr.labels)))
    return out


def pick_questions(bank: Sequence[Any], n: int) -> list[Any]:
    """``n`` questions spread over the bank (every option count represented when n allows)."""
    if n <= 0:
        raise InputError(f"--questions {n}: must be >= 1")
    by_k: dict[int, list[Any]] = {}
    for q in bank:
        by_k.setdefault(len(q.options), []).append(q)
    picked: list[Any] = []
    while len(picked) < min(n, len(bank)):
        for k in sorted(by_k, key=lambda k: -len(by_k[k])):
            if by_k[k] and len(picked) < n:
                picked.append(by_k[k].pop(len(by_k[k]) // 2))
    return picked



def run_strategy(model: Any, requests: Sequence[ScoreRequest], strategy: str, *,
                 xla: bool = True, **options: Any) -> tuple[dict[str, Any], list[ScoreResult]]:
    """A cold run (compiles every shape), then a timed warm run with a fresh Scorer (so the
    prefix cache's prefill is timed too)."""
    cold = Scorer(model, **options)
    t0 = time.perf_counter()
    cold.score(requests, strategy=strategy)
    cold_s = time.perf_counter() - t0
    warm = Scorer(model, **options)
    with RssMonitor() as mem:
        t0 = time.perf_counter()
        results = warm.score(requests, strategy=strategy)
        wall = time.perf_counter() - t0
    st = warm.stats
    row = {"strategy": strategy, "prompts": len(requests), "wall_s": wall,
           "s_per_prompt": wall / len(requests), "cold_s": cold_s,
           "compiles": cold.stats.compiles, "recompiles_warm": st.compiles,
           "calls": st.calls, "rows": st.rows, "tokens_processed": st.tokens_processed,
           "tokens_real": st.tokens_real, "head_positions": st.head_positions,
           "flops_model": st.flops, "gflops_per_s": st.flops / wall / 1e9,
           "rss_peak_mb": mem.peak / 2**20, "rss_increase_mb": (mem.peak - mem.start) / 2**20,
           "device_peak_bytes": device_peak_bytes(),
           "shapes": {" ".join(map(str, k)): v for k, v in sorted(st.shapes.items())}}
    if xla:
        costs = xla_costs(warm.cfg, st.shapes)
        row["flops_xla"] = costs["xla_flops"]
        row["xla_peak_mb"] = None if costs["xla_peak_bytes"] is None else \
            costs["xla_peak_bytes"] / 2**20
    return row, results


def option_differences(a: Sequence[ScoreResult], b: Sequence[Sequence[float]]
                       ) -> dict[str, float]:
    """Largest absolute difference of option log-likelihoods, ours ``a`` against ``b`` (one list
    per request, in order), in total and per continuation token."""
    d = [np.abs(x.option_logprob - np.asarray(y, float)) for x, y in zip(a, b, strict=True)]
    return {"option_logprob": float(max(v.max() for v in d)),
            "option_logprob_per_token": float(max((v / x.option_ntokens).max()
                                                  for v, x in zip(d, a)))}


def max_differences(a: Sequence[ScoreResult], b: Sequence[ScoreResult]) -> dict[str, float]:
    """Largest absolute differences of token logits and option log-likelihoods (and per token)."""
    d_logit = max(max(np.abs(x.token_logits - y.token_logits).max(),
                      np.abs(x.token_logits_space - y.token_logits_space).max())
                  for x, y in zip(a, b))
    return {"token_logits": float(d_logit)} | option_differences(a, [y.option_logprob for y in b])

def generation_flops(cfg: Any, n_prompt: int, lengths: Sequence[int]) -> float:
    """Useful FLOPs of sampling: one prefill of the prompt, then every generated token with
    attention over its real context (the same count for every implementation)."""
    total = flops_estimate(cfg, 1, n_prompt, n_prompt, 1)
    for m in lengths:
        for t in range(m):
            total += flops_estimate(cfg, 1, 1, n_prompt + t + 1, 1)
    return total


def our_generate(model: Any, prompts: Sequence[str], keys: Sequence[str], *, samples: int,
                 max_new_tokens: int) -> tuple[float, float, list[list[int]], dict[str, int]]:
    """``Sampler``: a cold call (compiles), then a timed warm call. Returns (seconds,
    cold seconds, generated lengths per prompt, the warm call's ``SamplerStats``)."""
    sampler = Sampler(model.cfg, model.params, model.tokenizer)
    sp = SamplingParams(temperature=1.0, num_samples=samples, max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    sampler.generate(prompts, keys, sp)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    gens = sampler.generate(prompts, keys, sp)
    wall = time.perf_counter() - t0
    stats = dataclasses.asdict(sampler.last_stats)
    return wall, cold, [[len(g.token_ids) for g in per] for per in gens], stats


# ----------------------------------------------------------------------------- plot groups


def group_timings(model: Any, prompts: Sequence[tuple[ScoreRequest, int]],
                  strategies: Sequence[str], **options: Any) -> list[dict[str, Any]]:
    """Time per prompt of each strategy on groups of prompts: by number of options, and by
    prompt-length quartile (each group run cold, then timed warm)."""
    lengths = [len(encode_request(model.tokenizer, r).prompt) for r, _ in prompts]
    groups: list[tuple[str, float, list[int]]] = []
    for k in sorted({k for _, k in prompts}):
        groups.append(("options", k, [i for i, (_, kk) in enumerate(prompts) if kk == k]))
    edges = np.quantile(lengths, [0, 0.25, 0.5, 0.75, 1.0])
    for lo, hi in zip(edges[:-1], edges[1:]):
        idx = [i for i, n in enumerate(lengths) if lo <= n <= hi]
        if idx:
            groups.append(("prompt_tokens", float(np.mean([lengths[i] for i in idx])), idx))
    rows = []
    for by, x, idx in groups:
        reqs = [prompts[i][0] for i in idx]
        for strategy in strategies:
            Scorer(model, **options).score(reqs, strategy=strategy)
            t0 = time.perf_counter()
            Scorer(model, **options).score(reqs, strategy=strategy)
            rows.append({"by": by, "x": x, "strategy": strategy, "prompts": len(reqs),
                         "s_per_prompt": (time.perf_counter() - t0) / len(reqs)})
    return rows

# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class BenchOptions:
    model: str = "smollm2-135m-instruct"
    strategies: tuple[str, ...] = STRATEGIES
    questions: int = 8
    styles: tuple[str, ...] = ("default", "prefixed", "one_shot")
    data_dir: str | None = None
    hf: bool = True  # the HF-PyTorch reference (scoring and generation)
    lmeval: bool = True  # lm-eval's HF backend on the seq-method requests
    lmeval_batch_sizes: tuple[int, ...] = LMEVAL_BATCH_SIZES
    torch_threads: int | None = None  # the PyTorch peers' threads (None: all cores)
    generation: bool = True
    generation_prompts: int = 24
    samples: int = 10
    max_new_tokens: int = 64
    groups: bool = False  # per-group timings for the plot
    xla: bool = True


# the PyTorch peers' packages (transformers is a main dependency): the [bench] extra
PEER_PACKAGES = {"hf": ("torch",), "lmeval": ("torch", "accelerate", "lm_eval")}
PEER_FLAGS = {"hf": "--no-hf", "lmeval": "--no-lmeval"}


def check_peer_packages(opts: BenchOptions) -> None:
    """One InputError naming every package the requested PyTorch peers lack (none imported)."""
    wanted = [p for p in PEER_PACKAGES if getattr(opts, p)]
    missing = sorted({m for p in wanted for m in PEER_PACKAGES[p]
                      if importlib.util.find_spec(m) is None})
    if missing:
        skip = " ".join(PEER_FLAGS[p] for p in wanted
                        if any(m in missing for m in PEER_PACKAGES[p]))
        raise InputError(f"the PyTorch peers need {', '.join(missing)}: pip install -e '.[bench]' "
                         f"(or skip them with {skip})")


def run_bench(opts: BenchOptions, log=print) -> dict[str, Any]:
    """Everything ``valueprobe bench`` reports, as one JSON-ready dict."""
    for s in opts.strategies:
        if s not in STRATEGIES:
            raise InputError(f"--strategies: unknown strategy {s!r} (choose from "
                             f"{', '.join(STRATEGIES)})")
    if opts.lmeval and (not opts.lmeval_batch_sizes or min(opts.lmeval_batch_sizes) < 1):
        raise InputError(f"--lmeval-batch-sizes {opts.lmeval_batch_sizes}: need sizes >= 1")
    check_peer_packages(opts)
    result: dict[str, Any] = {"machine": machine_info(), "load_average_start": load_average(),
                              "model": opts.model, "strategy_names": list(opts.strategies)}
    model = load_model(opts.model)
    questions = pick_questions(load_question_bank(opts.data_dir), opts.questions)
    prompts = bench_prompts(model.tokenizer, questions, opts.styles)
    requests = [r for r, _ in prompts]
    encoded = [encode_request(model.tokenizer, r) for r in requests]
    result["prompts"] = len(requests)
    result["questions"] = [q.id for q in questions]
    result["styles"] = list(opts.styles)
    result["min_tokens"] = min_token_count(encoded)
    result["sum_prompt_tokens"] = sum(len(e.prompt) for e in encoded)
    result["boundary_splits"] = sum(e.boundary_split for e in encoded)
    log(f"{len(requests)} prompts ({len(questions)} questions x {len(opts.styles)} styles), "
        f"minimum {result['min_tokens']} tokens")
    peak_start = matmul_peak_gflops()

    rows, outs = {}, {}
    for strategy in opts.strategies:
        log(f"strategy {strategy} ...")
        rows[strategy], outs[strategy] = run_strategy(model, requests, strategy, xla=opts.xla)
    # the peak is noisy on a shared machine: measured before and after, the best kept
    result["matmul_peak_gflops"] = max(peak_start, matmul_peak_gflops())
    base = rows.get("naive")
    for strategy, row in rows.items():
        row["tokens_vs_min"] = row["tokens_processed"] / result["min_tokens"]
        if base is not None:
            row["time_speedup_vs_naive"] = base["wall_s"] / row["wall_s"]
            row["token_ratio_vs_naive"] = base["tokens_processed"] / row["tokens_processed"]
            row["flops_ratio_vs_naive"] = base["flops_model"] / row["flops_model"]
            row["diff_vs_naive"] = max_differences(outs[strategy], outs["naive"])
        row["peak_fraction"] = row["gflops_per_s"] / result["matmul_peak_gflops"]
    result["strategies"] = rows
    result["targets"] = _targets(rows)

    if opts.hf:
        result["hf"] = _hf_part(opts, model, requests, rows, outs, log)
    if opts.lmeval:
        result["lmeval"] = _lmeval_part(opts, model, encoded, rows, outs, log)
    if opts.groups:
        log("group timings for the plot ...")
        result["groups"] = group_timings(model, prompts, opts.strategies)
    result["load_average_end"] = load_average()
    return result


def _targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue 8's targets, measured: tokens <= 1.2 x minimum; speedup >= 0.6 x token ratio."""
    out = {}
    for s in ("packed", "prefix_cache"):
        if s in rows and "naive" in rows:
            r = rows[s]
            out[s] = {"tokens_vs_min": r["tokens_vs_min"],
                      "tokens_ok": r["tokens_vs_min"] <= 1.2,
                      "speedup": r["time_speedup_vs_naive"],
                      "required_speedup": 0.6 * r["token_ratio_vs_naive"],
                      "speed_ok": r["time_speedup_vs_naive"] >= 0.6 * r["token_ratio_vs_naive"]}
    return out


def _hf_part(opts: BenchOptions, model: Any, requests: Sequence[ScoreRequest],
             rows: dict[str, dict[str, Any]], outs: dict[str, list[ScoreResult]],
             log) -> dict[str, Any]:
    n_gen = min(opts.generation_prompts, len(requests))
    gen = ({"prompts": n_gen, "samples": opts.samples, "max_new_tokens": opts.max_new_tokens}
           if opts.generation else None)
    log("HF-PyTorch reference (own process) ...")
    ref = run_hf_reference(model, opts.model, requests, generation=gen,
                           threads=opts.torch_threads)
    cfg = model.cfg
    hf: dict[str, Any] = {"torch": ref["torch"], "torch_threads": ref["threads"],
                          "matmul_peak_gflops_torch": ref["matmul_peak_gflops"]}
    wall = ref["scoring_s"]
    flops = sum(flops_estimate(cfg, 1, n, n, n) for n in ref["forward_lengths"])
    hf["scoring"] = {"wall_s": wall, "s_per_prompt": wall / len(requests), "flops": flops,
                     "forwards": len(ref["forward_lengths"]),
                     "tokens": int(sum(ref["forward_lengths"])),
                     "gflops_per_s": flops / wall / 1e9,
                     "peak_fraction": flops / wall / 1e9 / ref["matmul_peak_gflops"]}
    ours = [s for s in ("packed", "prefix_cache") if s in rows]
    hf["scoring"]["speedup"] = {s: wall / rows[s]["wall_s"] for s in ours}
    hf["scoring"]["diff_vs_ours"] = {s: max_differences(outs[s], as_results(ref["scores"]))
                                     for s in ours}
    if gen:
        texts, keys = [r.prompt for r in requests[:n_gen]], [r.key for r in requests[:n_gen]]
        log(f"our generation: {n_gen} prompts x {opts.samples} samples x "
            f"{opts.max_new_tokens} tokens ...")
        our_s, our_cold, our_len, our_stats = our_generate(model, texts, keys, samples=opts.samples,
                                                max_new_tokens=opts.max_new_tokens)
        hf_s, hf_len = ref["generation_s"], ref["gen_lengths"]
        n_prompt = ref["gen_prompt_lengths"]
        hf_flops = sum(generation_flops(cfg, p, ls) for p, ls in zip(n_prompt, hf_len))
        our_flops = sum(generation_flops(cfg, p, ls) for p, ls in zip(n_prompt, our_len))
        hf_tok, our_tok = sum(map(sum, hf_len)), sum(map(sum, our_len))
        hf["generation"] = {
            "prompts": n_gen, "samples": opts.samples, "max_new_tokens": opts.max_new_tokens,
            "hf_s_per_prompt": hf_s / n_gen, "ours_s_per_prompt": our_s / n_gen,
            "ours_cold_s": our_cold, "hf_tokens": int(hf_tok), "ours_tokens": int(our_tok),
            "hf_tokens_per_s": hf_tok / hf_s, "ours_tokens_per_s": our_tok / our_s,
            "speedup": hf_s / our_s, "speedup_per_token": (our_tok / our_s) / (hf_tok / hf_s),
            "hf_useful_gflops_per_s": hf_flops / hf_s / 1e9,
            "ours_useful_gflops_per_s": our_flops / our_s / 1e9, "ours_sampler": our_stats}
    return hf


def _lmeval_part(opts: BenchOptions, model: Any, encoded: Sequence[Any],
                 rows: dict[str, dict[str, Any]], outs: dict[str, list[ScoreResult]],
                 log) -> dict[str, Any]:
    """lm-eval's HFLM on our seq-method token requests: every batch size's time and difference
    from ours, the best batch size, and our speedup against it."""
    log(f"lm-eval HF backend (own process), batch sizes "
        f"{', '.join(map(str, opts.lmeval_batch_sizes))} ...")
    peer = run_lmeval_peer(model, opts.model, encoded, batch_sizes=opts.lmeval_batch_sizes,
                           threads=opts.torch_threads)
    ours = [s for s in ("packed", "prefix_cache") if s in rows] or list(rows)
    n = len(encoded)
    runs = [{"batch_size": r["batch_size"], "wall_s": r["seconds"], "s_per_prompt": r["seconds"] / n,
             "diff_vs_ours": {s: option_differences(outs[s], r["option_logprob"]) for s in ours}}
            for r in peer["runs"]]
    best = min(runs, key=lambda r: r["wall_s"])
    return {"lm_eval": peer["lm_eval"], "torch": peer["torch"], "torch_threads": peer["threads"],
            "tokens": peer["tokens"], "runs": runs, "best_batch_size": best["batch_size"],
            "wall_s": best["wall_s"], "s_per_prompt": best["s_per_prompt"],
            "speedup": {s: best["wall_s"] / rows[s]["wall_s"] for s in ours},
            "max_diff_option_logprob": max(d["option_logprob"] for r in runs
                                           for d in r["diff_vs_ours"].values())}


__all__ = ["BenchOptions", "run_bench", "check_peer_packages", "bench_prompts", "pick_questions",
           "run_strategy", "option_differences", "max_differences", "generation_flops",
           "our_generate", "group_timings"]
