"""The engine: packed option scoring and the sampling decode loop (layer 3: uses models, parallel).

Its public surface, which the layers above (probing, the lm-eval backend, bench) use:
``Scorer`` / ``ScoreRequest`` / ``ScoreResult`` (label logits and option log-likelihoods of many
prompts in packed rows) and ``Sampler`` / ``SamplingParams`` / ``Generation`` (the jitted decode
loop). Modules, bottom up: requests (records, tokenization), flops (the FLOP model), packing
(prefix forests into rows), calls (rows into call arrays), cores (the jitted scoring functions),
ratings (1-10 ratings from scores), scorer (the Scorer and its strategies); sampling (the
sampling math), decode_loop (the jitted loop), sampler (the Sampler); shared_prefill (scoring
and sampling from one prefill per prompt); logprobs (one plain forward); traces (compile
counting per Scorer / Sampler)."""

from valueprobe_jax.engine.requests import ScoreRequest, ScoreResult
from valueprobe_jax.engine.sampler import Generation, Sampler
from valueprobe_jax.engine.sampling import SamplingParams
from valueprobe_jax.engine.scorer import STRATEGIES, Scorer

__all__ = ["Scorer", "ScoreRequest", "ScoreResult", "STRATEGIES", "Sampler", "SamplingParams",
           "Generation"]
