"""JAX's persistent compilation cache, on by default, so a second run skips XLA compilation.

Compiled programs are kept under ``$VALUEPROBE_CACHE/xla`` (see ``io.cache_root``). Set
``VALUEPROBE_COMPILE_CACHE=0`` (or pass ``valueprobe --no-compile-cache``) to turn it off.
"""

from __future__ import annotations

import os
import pathlib

from valueprobe_jax import io

ENV = "VALUEPROBE_COMPILE_CACHE"


def enabled_by_env() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def enable(directory: str | os.PathLike | None = None) -> pathlib.Path:
    """Point JAX's persistent compilation cache at ``directory`` (default the project cache) and
    cache every program, however quick to compile: the small ones add up over a run's buckets."""
    import jax

    path = pathlib.Path(directory) if directory else io.cache_root() / "xla"
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
