"""The drivers of the PyTorch peers: run ``hf_reference`` (the paper's procedure) and
``lmeval_peer`` (lm-eval's HF backend) each in a fresh process (no JAX threads beside PyTorch's) on
the bench's requests, and read their numbers back."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from valueprobe_jax.engine import ScoreRequest, ScoreResult
from valueprobe_jax.engine.requests import Encoded
from valueprobe_jax.errors import InputError
from valueprobe_jax.models.hf_export import hf_checkpoint

LMEVAL_BATCH_SIZES = (1, 8, 16)


def _run_peer(module: str, what: str, model: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Run ``python -m module IN.json OUT.json`` on ``job`` plus our tokenizer's files (saved to a
    temporary directory as "tokenizer"); returns its JSON output."""
    with tempfile.TemporaryDirectory(prefix="vp-peer-") as d:
        model.tokenizer.save_pretrained(os.path.join(d, "tokenizer"))
        src, dst = os.path.join(d, "job.json"), os.path.join(d, "out.json")
        with open(src, "w", encoding="utf-8") as f:
            json.dump(job | {"tokenizer": os.path.join(d, "tokenizer")}, f)
        proc = subprocess.run([sys.executable, "-m", module, src, dst], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise InputError(f"{what} failed: {tail[0]}")
        with open(dst, encoding="utf-8") as f:
            return json.load(f)


def run_hf_reference(model: Any, model_name: str, requests: Sequence[ScoreRequest], *,
                     generation: dict[str, int] | None, threads: int | None = None
                     ) -> dict[str, Any]:
    """Run ``hf_reference`` (the paper's procedure) in a fresh process on the same requests;
    returns its JSON output."""
    job = {"model": str(hf_checkpoint(model_name)),
           "requests": [dataclasses.asdict(r) | {"continuations": list(r.continuations),
                                                 "labels": list(r.labels)} for r in requests],
           "generation": generation, "threads": threads or os.cpu_count()}
    return _run_peer("valueprobe_jax.bench.hf_reference", f"HF reference for {model_name!r}",
                     model, job)


def run_lmeval_peer(model: Any, model_name: str, encoded: Sequence[Encoded], *,
                    batch_sizes: Sequence[int] = LMEVAL_BATCH_SIZES,
                    threads: int | None = None) -> dict[str, Any]:
    """Run ``lmeval_peer`` (lm-eval's HFLM) in a fresh process on the token ids our engine
    scores (``encoded``: the prompt and every option's continuation); returns its JSON output,
    with each run's log-likelihoods regrouped per request as ``option_logprob`` lists."""
    job = {"checkpoint": str(hf_checkpoint(model_name)),
           "requests": [{"key": e.key, "context": list(e.prompt),
                         "continuations": [list(o) for o in e.options]} for e in encoded],
           "batch_sizes": [int(b) for b in batch_sizes], "threads": threads or os.cpu_count()}
    out = _run_peer("valueprobe_jax.bench.lmeval_peer",
                    f"lm-eval HF backend for {model_name!r}", model, job)
    for run in out["runs"]:
        flat, run["option_logprob"] = iter(run.pop("loglik")), []
        for e in encoded:
            run["option_logprob"].append([next(flat) for _ in e.options])
    return out


def as_results(scores: list[dict]) -> list[ScoreResult]:
    """The reference's per-request numbers as ``ScoreResult``s (no label token ids)."""
    return [ScoreResult(r["key"], np.array(r["token_logits"]), np.array(r["token_logits_space"]),
                        np.zeros((0, 2), int), np.zeros((0, 2), bool),
                        np.array(r["option_logprob"]), np.array(r["option_ntokens"]),
                        r["n_prompt_tokens"], r["boundary_split"]) for r in scores]


__all__ = ["LMEVAL_BATCH_SIZES", "run_hf_reference", "run_lmeval_peer", "as_results"]
