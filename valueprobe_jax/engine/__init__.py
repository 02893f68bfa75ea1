"""The engine: packed option scoring and the sampling decode loop (layer 3: uses models, parallel).

Its public surface, which the layers above (probing, the lm-eval backend, bench) use:
``Scorer`` / ``ScoreRequest`` / ``ScoreResult`` (label logits and option log-likelihoods of many
prompts in packed rows) and ``Sampler`` / ``SamplingParams`` (the jitted decode loop)."""

from valueprobe_jax.engine.sampling import Generation, Sampler, SamplingParams
from valueprobe_jax.engine.scoring import STRATEGIES, ScoreRequest, ScoreResult, Scorer

__all__ = ["Scorer", "ScoreRequest", "ScoreResult", "STRATEGIES", "Sampler", "SamplingParams",
           "Generation"]
