"""Rows laid out as the arrays of one jitted call, and the shape buckets that bound compiles.

Tree mask in one vector: nodes are stored in depth-first (pre)order, so node s is an ancestor of
(or equal to) node t exactly when ``s <= t < end[s]`` with ``end[s] = s + size of s's subtree``.
Rows therefore ship ``end[B, T]`` instead of a ``[B, T, T]`` mask (``cores.tree_mask`` builds the
mask inside the jitted function). Padding slots have ``end = s + 1`` (they see only themselves;
nobody sees them). Row length, batch size and the number of LM-head positions are bucketed so jit
compiles once per bucket.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from valueprobe_jax.engine.packing import Row


def bucket_length(n: int, minimum: int = 32, per_octave: int = 4) -> int:
    """Row-length bucket: multiples of 1/``per_octave`` of the power of two below n (a power of
    two; 4 gives at most 25% padding, 1 gives powers of two: fewer compiles), at least
    ``minimum``."""
    if n <= minimum:
        return minimum
    step = max(1, 1 << (max(n - 1, 1).bit_length() - 1 - (per_octave.bit_length() - 1)))
    return -(-n // step) * step


def _pow2(n: int, minimum: int = 1) -> int:
    return max(minimum, 1 << max(n - 1, 0).bit_length())


@dataclasses.dataclass
class RowArrays:
    """One laid-out row: nodes in depth-first order and the (logit position, token, target)
    reads. ``kind`` 1 = label logit (idx = 2 * label + form), 2 = option token (idx = option)."""

    tokens: np.ndarray
    positions: np.ndarray
    ends: np.ndarray
    logits_at: np.ndarray  # slots whose next-token distribution is read
    pair_at: np.ndarray  # index into logits_at
    pair_tok: np.ndarray
    pair_kind: np.ndarray
    pair_req: np.ndarray
    pair_idx: np.ndarray


def lay_out(row: Row, offset: int) -> RowArrays:
    """A packed row as arrays; positions start at ``offset`` (the cached prefix's length). An
    item with an empty prompt (its prompt is all in the cache) reads its label logits and its
    options' first tokens at logits slot -1: the logits after the cached prompt."""
    slot, toks, depth, ends = row.layout()
    at: dict[int, int] = {}
    reads: list[tuple[int, int, int, int, int]] = []
    for item, (end, opts) in zip(row.items, row.paths):
        e = int(slot[end]) if end >= 0 else -1
        for j, lid in enumerate(item.label_ids):
            reads.append((at.setdefault(e, len(at)), lid, 1, item.req, j))
        for oi, nodes in zip(item.option_index, opts):
            parent = e
            for node in nodes:
                reads.append((at.setdefault(parent, len(at)), row.tok[node], 2, item.req, oi))
                parent = int(slot[node])
    r = np.asarray(reads, np.int64).reshape(-1, 5)
    return RowArrays(toks, depth + offset, ends, np.fromiter(at.keys(), np.int64, len(at)),
                     r[:, 0], r[:, 1], r[:, 2], r[:, 3], r[:, 4])


@dataclasses.dataclass
class Call:
    """One jitted call: stacked rows padded to (B, T) with M head positions and N reads."""

    rows: list[RowArrays]
    length: int  # T
    full_head: bool = False
    prefix: tuple[int, ...] | None = None  # prefix_cache: the cached prefix these rows continue

    def arrays(self) -> dict[str, np.ndarray]:
        b, t = len(self.rows), self.length
        m = max(len(r.logits_at) for r in self.rows)
        n = max(len(r.pair_at) for r in self.rows)
        # LM-head positions: little padding (each costs a vocab-sized matmul row); reads are
        # cheap gathers: powers of two with a generous minimum (fewer distinct shapes)
        m, n = bucket_length(m, minimum=16, per_octave=4), _pow2(n, 64)
        out = dict(tokens=np.zeros((b, t), np.int32), positions=np.zeros((b, t), np.int32),
                   ends=np.tile(np.arange(1, t + 1, dtype=np.int32), (b, 1)),
                   logits_at=np.zeros((b, m), np.int32), pair_at=np.zeros((b, n), np.int32),
                   pair_tok=np.zeros((b, n), np.int32))
        for i, r in enumerate(self.rows):
            k = len(r.tokens)
            out["tokens"][i, :k], out["positions"][i, :k], out["ends"][i, :k] = \
                r.tokens, r.positions, r.ends
            out["logits_at"][i, :len(r.logits_at)] = r.logits_at
            out["pair_at"][i, :len(r.pair_at)] = r.pair_at
            out["pair_tok"][i, :len(r.pair_tok)] = r.pair_tok
        return out


def _batch_sizes(n_rows: int, max_batch: int) -> list[int]:
    """Split ``n_rows`` into power-of-two batch sizes <= max_batch (no empty padding rows; at most
    log2(max_batch) + 1 distinct shapes)."""
    cap = 1 << (max(1, max_batch).bit_length() - 1)
    sizes = []
    while n_rows > 0:
        b = min(cap, 1 << (n_rows.bit_length() - 1))
        sizes.append(b)
        n_rows -= b
    return sizes


def calls_of(rows: list[RowArrays], length: int, tokens_per_call: int,
             max_batch: int | None = None, **kw: Any) -> list[Call]:
    """Rows of one length grouped into calls of at most ``tokens_per_call`` tokens (power-of-two
    batch sizes); ``kw`` go to every ``Call``."""
    calls, i = [], 0
    cap = tokens_per_call // length
    for b in _batch_sizes(len(rows), min(cap, max_batch) if max_batch else cap):
        calls.append(Call(rows[i:i + b], length, **kw))
        i += b
    return calls


__all__ = ["bucket_length", "RowArrays", "lay_out", "Call", "calls_of"]
