"""XLA flags set through ``$XLA_FLAGS``, which XLA reads once, when JAX's backend starts.

``CPU_DEFAULTS`` are the XLA:CPU settings the ``valueprobe`` command applies before JAX starts
(``apply_cpu_defaults``); a value the user already put in ``$XLA_FLAGS`` wins. They change how
fast programs run, never what they compute:

- ``xla_cpu_enable_concurrency_optimized_scheduler=false``: XLA:CPU's default scheduler leaves the
  decode loop's ops running one after another; with it off they overlap on the cores, and a
  32-prompt generation call of SmolLM2 runs about 1.2x faster (README, "Where a decode step's time
  goes"). Scheduling only orders independent ops: samples, log-probabilities and scores are
  bit-identical (``tests/test_xla_flags.py``). The flag is read from the process's flags only:
  ``jax.jit(compiler_options=...)`` does not reach it.
"""

from __future__ import annotations

import os
import sys

ENV = "XLA_FLAGS"
CPU_DEFAULTS = {"xla_cpu_enable_concurrency_optimized_scheduler": "false"}


def backend_started() -> bool:
    """Whether JAX's backend has started (then ``$XLA_FLAGS`` is read already)."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge  # noqa: PLC0415

    return xla_bridge.backends_are_initialized()


def set_flag(name: str, value: str, *, override: bool = False) -> bool:
    """Put ``--name=value`` in ``$XLA_FLAGS`` unless JAX's backend has started (then return False
    and change nothing). Without ``override`` a value already there (the user's) is kept."""
    if backend_started():
        return False
    flag = f"--{name}"
    flags = os.environ.get(ENV, "").split()
    present = [f for f in flags if f == flag or f.startswith(flag + "=")]
    if present and not override:
        return True
    os.environ[ENV] = " ".join([f for f in flags if f not in present] + [f"{flag}={value}"])
    return True


def apply_cpu_defaults() -> None:
    """``CPU_DEFAULTS`` into ``$XLA_FLAGS`` (before JAX's backend starts; the user's wins)."""
    for name, value in CPU_DEFAULTS.items():
        set_flag(name, value)


__all__ = ["ENV", "CPU_DEFAULTS", "backend_started", "set_flag", "apply_cpu_defaults"]
