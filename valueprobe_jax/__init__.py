"""valueprobe_jax: probing the value orientation of LLMs with JAX/Flax.

The public API (imported lazily, so ``import valueprobe_jax`` stays cheap):

    load_model(name_or_dir)            models.checkpoints: registry name, HF dir, .gguf or orbax
    Scorer, ScoreRequest               engine: packed option scoring (label logits, log-likelihoods)
    Sampler, SamplingParams            engine: the jitted decode loop
    ProbeEngine, ProbeSettings         probing: the three methods end to end -> result rows
    build_probe_requests               probing: style x variant x country x question prompts
    load_config, run_config            experiments: ml-collections configs, resumable sweeps
    read_results                       experiments: the result rows of a workdir
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "load_model": "valueprobe_jax.models.checkpoints",
    "LoadedModel": "valueprobe_jax.models.checkpoints",
    "Scorer": "valueprobe_jax.engine.scorer",
    "ScoreRequest": "valueprobe_jax.engine.requests",
    "Sampler": "valueprobe_jax.engine.sampler",
    "SamplingParams": "valueprobe_jax.engine.sampling",
    "ProbeEngine": "valueprobe_jax.probing.engine",
    "ProbeSettings": "valueprobe_jax.probing.engine",
    "build_probe_requests": "valueprobe_jax.probing.engine",
    "load_config": "valueprobe_jax.experiments.config_loading",
    "run_config": "valueprobe_jax.experiments.runner",
    "read_results": "valueprobe_jax.experiments.results",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'valueprobe_jax' has no attribute {name!r}")
