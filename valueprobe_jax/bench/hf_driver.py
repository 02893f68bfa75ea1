"""The driver of the Hugging Face reference: runs ``hf_reference`` in a fresh process (no JAX
threads beside PyTorch's) on the bench's requests and reads its numbers back as ``ScoreResult``s."""

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
from valueprobe_jax.errors import InputError
from valueprobe_jax.models.hf_export import hf_checkpoint


def run_hf_reference(model: Any, model_name: str, requests: Sequence[ScoreRequest], *,
                     generation: dict[str, int] | None, threads: int | None = None
                     ) -> dict[str, Any]:
    """Run ``hf_reference`` in a fresh process (no JAX threads beside PyTorch's) on the same
    requests; returns its JSON output."""
    with tempfile.TemporaryDirectory(prefix="vp-hf-") as d:
        model.tokenizer.save_pretrained(os.path.join(d, "tokenizer"))
        job = {"model": str(hf_checkpoint(model_name)), "tokenizer": os.path.join(d, "tokenizer"),
               "requests": [dataclasses.asdict(r) | {"continuations": list(r.continuations),
                                                     "labels": list(r.labels)}
                            for r in requests],
               "generation": generation, "threads": threads or os.cpu_count()}
        src, dst = os.path.join(d, "job.json"), os.path.join(d, "out.json")
        with open(src, "w", encoding="utf-8") as f:
            json.dump(job, f)
        proc = subprocess.run([sys.executable, "-m", "valueprobe_jax.bench.hf_reference", src, dst],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise InputError(f"HF reference for {model_name!r} failed: {tail[0]}")
        with open(dst, encoding="utf-8") as f:
            return json.load(f)


def as_results(scores: list[dict]) -> list[ScoreResult]:
    """The reference's per-request numbers as ``ScoreResult``s (no label token ids)."""
    return [ScoreResult(r["key"], np.array(r["token_logits"]), np.array(r["token_logits_space"]),
                        np.zeros((0, 2), int), np.zeros((0, 2), bool),
                        np.array(r["option_logprob"]), np.array(r["option_ntokens"]),
                        r["n_prompt_tokens"], r["boundary_split"]) for r in scores]


__all__ = ["run_hf_reference", "as_results"]
