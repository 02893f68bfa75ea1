"""Packing: requests' token sequences as prefix forests, and forests into rows of one length.

A row holds a forest in depth-first order: a prompt once, then each option's tokens below it;
prompts that share leading tokens (same system text, default vs prefixed style of one question)
share those nodes too. Every token attends to its ancestors only and its position is its depth,
so each option sees exactly the context of a full forward over prompt + option.

Plan: requests are sorted by prompt tokens; neighbours sharing at least half their prompt (e.g.
the default and prefixed styles of one question) form a unit; units go into rows by best-fit
decreasing, each unit's size measured against the row's existing tree. All rows of a plan have
one length, the candidate with the lowest modelled cost (``flops.row_cost``): short rows repeat
shared prefixes and waste their tails, long rows pay for the dense T x T masked attention.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Callable

import numpy as np

from valueprobe_jax.engine.flops import row_cost
from valueprobe_jax.engine.requests import Encoded
from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig


@dataclasses.dataclass
class Item:
    """One request's part of a row: token ids below the row's prefix, and where results go."""

    req: int
    prompt: tuple[int, ...]  # tokens after the shared prefix (empty: all in a prompt cache)
    options: tuple[tuple[int, ...], ...]
    option_index: tuple[int, ...]  # which continuation each entry of ``options`` is
    label_ids: tuple[int, ...]  # flat (bare, space) ids read at the prompt's last node; may be ()


class Row:
    """A prefix forest of token ids, laid out in depth-first order."""

    def __init__(self) -> None:
        self.tok: list[int] = []
        self.depth: list[int] = []
        self.kids: list[dict[int, int]] = []
        self.roots: dict[int, int] = {}
        self.items: list[Item] = []
        # per item: (prompt-end node, [per option: node ids of its tokens])
        self.paths: list[tuple[int, list[list[int]]]] = []

    def __len__(self) -> int:
        return len(self.tok)

    def _child(self, parent: int, t: int, dry: bool) -> int | None:
        table = self.roots if parent < 0 else self.kids[parent]
        node = table.get(t)
        if node is None and not dry:
            node = len(self.tok)
            table[t] = node
            self.tok.append(t)
            self.depth.append(0 if parent < 0 else self.depth[parent] + 1)
            self.kids.append({})
        return node

    def cost(self, items: Item | Sequence[Item]) -> int:
        """New nodes that adding ``items`` would create (a dry run; the items may share nodes
        among themselves too)."""
        virtual: dict[tuple[int, int], int] = {}

        def child(parent: int, t: int) -> int:
            if parent >= -1:
                real = self._child(parent, t, dry=True)
                if real is not None:
                    return real
            return virtual.setdefault((parent, t), -2 - len(virtual))

        for item in [items] if isinstance(items, Item) else items:
            node = -1
            for t in item.prompt:
                node = child(node, t)
            end = node
            for o in item.options:
                node = end
                for t in o:
                    node = child(node, t)
        return len(virtual)

    def shared(self, trie: dict) -> int:
        """Nodes of a prefix tree (nested dicts token -> subtree) that this row already holds."""
        count, stack = 0, [(-1, trie)]
        while stack:
            node, sub = stack.pop()
            table = self.roots if node < 0 else self.kids[node]
            for t, child in sub.items():
                c = table.get(t)
                if c is not None:
                    count += 1
                    stack.append((c, child))
        return count

    def add(self, item: Item) -> None:
        node = -1
        for t in item.prompt:
            node = self._child(node, t, dry=False)
        end = node
        opts = []
        for o in item.options:
            node, nodes = end, []
            for t in o:
                node = self._child(node, t, dry=False)
                nodes.append(node)
            opts.append(nodes)
        self.items.append(item)
        self.paths.append((end, opts))

    def layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(slot of every node, tokens, depths, subtree ends) in depth-first order."""
        n = len(self.tok)
        slot = np.zeros(n, np.int64)
        size = np.ones(n, np.int64)
        order: list[int] = []
        stack = list(reversed(list(self.roots.values())))
        while stack:
            v = stack.pop()
            slot[v] = len(order)
            order.append(v)
            stack.extend(reversed(list(self.kids[v].values())))
        for v in reversed(order):  # children come after parents in preorder
            for c in self.kids[v].values():
                size[v] += size[c]
        order_a = np.asarray(order, np.int64)
        toks = np.asarray(self.tok, np.int64)[order_a]
        depth = np.asarray(self.depth, np.int64)[order_a]
        ends = slot[order_a] + size[order_a]
        return slot, toks, depth, ends


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _units(items: list[Item]) -> list[list[Item]]:
    """Neighbours (in sorted order) that share at least half of their prompts stay together:
    e.g. the default and prefixed style of one question, whose prompts differ only at the end."""
    units = [[items[0]]]
    for a, b in zip(items, items[1:]):
        if 2 * common_prefix(a.prompt, b.prompt) >= min(len(a.prompt), len(b.prompt)):
            units[-1].append(b)
        else:
            units.append([b])
    return units


def prefix_tree(items: Sequence[Item] | Sequence[Encoded]) -> tuple[dict, int, int]:
    """(prefix tree of the items' sequences as nested dicts, its node count, its prompt nodes);
    anything with ``prompt`` and ``options`` token tuples will do."""
    root: dict = {}
    nodes = prompt_nodes = 0
    for it in items:
        node = root
        for t in it.prompt:
            if t not in node:
                node[t] = {}
                nodes += 1
                prompt_nodes += 1
            node = node[t]
        for o in it.options:
            sub = node
            for t in o:
                if t not in sub:
                    sub[t] = {}
                    nodes += 1
                sub = sub[t]
    return root, nodes, prompt_nodes


@dataclasses.dataclass
class _Unit:
    items: list[Item]
    trie: dict
    alone: int  # nodes of its own prefix tree
    lower: int  # fewest new nodes it can add to any row (a row can share at most its prompts)


def _unit(items: list[Item]) -> _Unit:
    trie, alone, prompts = prefix_tree(items)
    return _Unit(items, trie, alone, alone - prompts)


def _best_fit(units: list[tuple[_Unit, list[_Unit]]], capacity: int) -> list[Row]:
    """Best-fit decreasing bin packing of units into rows of ``capacity`` nodes, sizes measured
    against each row's prefix tree (a unit costs less in a row that already holds its system
    text). A unit larger than a row is packed item by item (its ``parts``)."""
    flat = sorted((p for u, parts in units for p in ([u] if u.alone <= capacity else parts)),
                  key=lambda u: -u.alone)
    smallest = [0] * len(flat)  # smallest lower bound among the units still to place
    low = capacity + 1
    for i in range(len(flat) - 1, -1, -1):
        low = min(low, flat[i].lower)
        smallest[i] = low
    rows: list[Row] = []
    open_rows: list[Row] = []
    for i, u in enumerate(flat):
        open_rows = [r for r in open_rows if capacity - len(r) >= smallest[i]]
        best, best_left = None, None
        for r in open_rows:
            if capacity - len(r) < u.lower:
                continue
            left = capacity - len(r) - (u.alone - r.shared(u.trie))
            if left >= 0 and (best_left is None or left < best_left):
                best, best_left = r, left
        if best is None:
            best = Row()
            rows.append(best)
            open_rows.append(best)
        for it in u.items:
            best.add(it)
    return rows


def pack(cfg: ModelConfig, items: list[Item], bucket: Callable[[int], int], *,
         extra_keys: int = 0, max_row: int = 2048) -> tuple[list[Row], int]:
    """Pack items (in sorted, prefix-sharing order) into rows of one bucketed length, choosing the
    length with the lowest modelled cost (short rows waste their tails and repeat shared
    prefixes, long rows pay for the dense T x T attention). ``bucket(n)`` is the smallest allowed
    length >= n. Returns (rows, length)."""
    longest = max(Row().cost(it) for it in items)
    first = bucket(longest)
    candidates, c = [first], first
    while c < max_row:
        try:
            c = bucket(c + 1)
        except InputError:  # no longer bucket allowed
            break
        candidates.append(c)
    nodes = Row().cost(items)  # the whole prefix tree: no packing holds fewer nodes
    units = []
    for u in _units(items):
        unit = _unit(u)
        units.append((unit, [_unit([it]) for it in u] if len(u) > 1 else [unit]))
    best = None
    for c in candidates:
        if best is not None and -(-nodes // c) * row_cost(cfg, c, c + extra_keys) >= best[0]:
            continue  # cannot beat the best even with perfectly full rows
        rows = _best_fit(units, c)
        cost = len(rows) * row_cost(cfg, c, c + extra_keys)
        if best is None or cost < best[0]:
            best = (cost, rows, c)
        if len(rows) == 1:
            break
    return best[1], best[2]


def min_token_count(encoded: Sequence[Encoded]) -> int:
    """Every distinct token once: the node count of the prefix tree of all prompt and
    prompt + option token sequences (a token in the same context is counted once)."""
    return prefix_tree(encoded)[1]


__all__ = ["Item", "Row", "common_prefix", "prefix_tree", "pack", "min_token_count"]
