"""lm-evaluation-harness backend (layer 5, beside experiments; the optional ``[lmeval]`` extra).

Importing this package registers the lm-eval model ``valueprobe`` (``backend.ValueprobeLM``):
``loglikelihood`` on the packed prefix-tree scorer, ``loglikelihood_rolling`` on the same, and
``generate_until`` on the decode loop. lm-eval is imported only here; ``valueprobe lm-eval ...``
runs lm-eval's own command line with this backend registered.
"""

from valueprobe_jax.lmeval.backend import ValueprobeLM

__all__ = ["ValueprobeLM"]
