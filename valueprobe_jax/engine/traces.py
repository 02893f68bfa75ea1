"""Compile counting: how many times each jitted function was traced (one trace per new input
signature = one XLA compile).

Counts live in a ``TraceCounter`` object, not in module state, so each ``Scorer`` / ``Sampler``
reports the compiles that its own calls caused, whatever else ran in the process."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable


class TraceCounter:
    """Traces per kind of jitted function (e.g. "tree", "prefill", "decode")."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def hit(self, kind: str, n: int = 1) -> None:
        if n:
            self.counts[kind] = self.counts.get(kind, 0) + n

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def counted(fn: Callable, kind: str, traces: TraceCounter | None) -> Callable:
    """``fn`` that records a hit of ``kind`` in ``traces`` each time it runs; wrapped before
    ``jax.jit``, it runs only when jit traces it, so the hits are the compiles."""
    if traces is None:
        return fn

    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        traces.hit(kind)
        return fn(*args, **kwargs)

    # a partial has no name: keep its function's (jit names the compiled module after it)
    traced.__name__ = getattr(fn, "__name__", None) or getattr(fn, "func", fn).__name__
    return traced


@dataclasses.dataclass(frozen=True)
class Traced:
    """A jitted function and the counter of its traces, whoever calls it (jitted functions are
    shared by every ``Scorer`` / ``Sampler`` of a config, so their compiled shapes are too)."""

    fn: Callable
    traces: TraceCounter

    def run(self, into: TraceCounter, kind: str, *args: Any) -> Any:
        """``fn(*args)``, adding the traces this call caused to ``into`` (the caller's counter)."""
        before = self.traces.total
        out = self.fn(*args)
        into.hit(kind, self.traces.total - before)
        return out


__all__ = ["TraceCounter", "counted", "Traced"]
