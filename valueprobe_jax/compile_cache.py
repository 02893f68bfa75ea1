"""JAX's persistent compilation cache, on by default, so a second run skips XLA compilation.

Compiled programs are kept under ``$VALUEPROBE_CACHE/xla`` (see ``io.cache_root``). Set
``VALUEPROBE_COMPILE_CACHE=0`` (or pass ``valueprobe --no-compile-cache``) to turn it off.
"""

from __future__ import annotations

import os
import pathlib
import sys

from valueprobe_jax import io

ENV = "VALUEPROBE_COMPILE_CACHE"


def enabled_by_env() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def enable(directory: str | os.PathLike | None = None) -> pathlib.Path:
    """Point JAX's persistent compilation cache at ``directory`` (default the project cache) and
    cache every program, however quick to compile: the small ones add up over a run's buckets.

    Before JAX is imported (the CLI's case) this only sets JAX's own environment variables, so
    commands that never compile (merge, report, --help) do not pay for importing JAX; a user's
    own ``JAX_COMPILATION_CACHE_DIR`` wins then."""
    path = pathlib.Path(directory) if directory else io.cache_root() / "xla"
    path.mkdir(parents=True, exist_ok=True)
    settings = {"jax_compilation_cache_dir": str(path),
                "jax_persistent_cache_min_compile_time_secs": 0.0,
                "jax_persistent_cache_min_entry_size_bytes": 0}
    if "jax" in sys.modules:
        for name, value in settings.items():
            sys.modules["jax"].config.update(name, value)
    else:
        for name, value in settings.items():
            os.environ.setdefault(name.upper(), str(value))
    return path
