"""Peak memory of a timed run: the process's resident set sampled by a background thread, and the
device allocator's peak where the backend reports one."""

from __future__ import annotations

import os
import resource
import threading
from typing import Any

import jax


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssMonitor:
    """Samples the process's resident memory every ``interval`` seconds while active."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssMonitor":
        self.start = self.peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def device_peak_bytes() -> int | None:
    """The first device's peak bytes in use (None where the backend does not report it)."""
    stats = jax.devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


__all__ = ["RssMonitor", "device_peak_bytes"]
