"""The machine a benchmark ran on: CPU model, cores, load average, and the achieved float32 matmul
peak (GFLOP/s) that the bench's FLOP rates are compared with."""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def machine_info() -> dict[str, Any]:
    """CPU model, core count, platform, jax version, backend and (up to 4) devices."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()][:4]}
    return info


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 GFLOP/s of a jitted ``jnp.dot`` of two n x n matrices."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(jnp.dot)
    best = best_time(lambda: f(a, a).block_until_ready(), repeats)
    return 2.0 * n ** 3 / best / 1e9


def best_time(call: Callable[[], Any], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``call``, after one untimed warm-up call
    (compiles, allocator); ``call`` must wait for its results (``block_until_ready``)."""
    call()
    return min(_timed(call) for _ in range(repeats))


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


__all__ = ["machine_info", "load_average", "matmul_peak_gflops", "best_time"]
