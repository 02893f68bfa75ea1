"""Resumable sweeps: a config expands into work items with stable keys, fixed chunks of items are
pushed through the engine, and each chunk is written as one Parquet shard atomically.

Resumption is exact: chunks are cut from the full, deterministic item list (not from what is
left), so a restarted sweep runs the remaining chunks with the same composition as an
uninterrupted one and produces identical rows. A shard either exists whole or not at all, so a
kill at any moment loses at most the chunk in flight. On a multi-host pod each host takes chunks
``i % process_count == process_index`` and writes its own shards into the same directory layout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Callable, Sequence

import ml_collections
from tqdm import tqdm

from valueprobe_jax import io
from valueprobe_jax.experiments import results
from valueprobe_jax.probing.work import probe_cells, probe_countries
from valueprobe_jax.experiments.config_loading import config_fingerprint
from valueprobe_jax.errors import InputError

# Config fields that define the work items and their results (a workdir is bound to them).
FINGERPRINT_FIELDS = ("experiment", "max_questions", "input", "model", "probe", "actions", "run")


@dataclasses.dataclass(frozen=True)
class WorkItem:
    """One unit of work: a value probe of one prompt, or one action rating."""

    key: str
    kind: str  # "probe" | "rating"
    qid: str
    style: str = ""
    variant: str = ""
    country: str | None = None
    scenario_id: str = ""
    action: str = ""
    template: int = -1


def expand_probe_items(config: ml_collections.ConfigDict, qids: Sequence[str]) -> list[WorkItem]:
    """Questions x styles x variants x countries in ``work.probe_cells``' order (style-major)."""
    p = config.probe
    cells = probe_cells(config.experiment, config.model.name, p.styles, p.variants,
                        probe_countries(p.countries, p.include_no_country), qids)
    return [WorkItem(c.key, "probe", c.qid, c.style, c.variant, c.country) for c in cells]


def expand_rating_items(config: ml_collections.ConfigDict, scenarios_by_qid: dict[str, list[str]]) -> list[WorkItem]:
    """Up to ``max_scenarios`` scenarios per question x both actions x rating templates."""
    items = []
    for qid, scenario_ids in scenarios_by_qid.items():
        for sid in scenario_ids[: config.actions.max_scenarios]:
            for template in config.actions.templates:
                for action in ("A", "B"):
                    key = f"rating|{config.model.name}|{qid}|{sid}|{action}|t{template}"
                    items.append(WorkItem(key, "rating", qid, scenario_id=sid, action=action,
                                          template=int(template)))
    return items


def chunk_items(items: Sequence[WorkItem], size: int) -> list[list[WorkItem]]:
    if size <= 0:
        raise InputError(f"run.chunk_size={size}: must be positive")
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        raise ValueError("work items have duplicate keys")
    return [list(items[i: i + size]) for i in range(0, len(items), size)]


def shard_path(workdir: pathlib.Path, index: int) -> pathlib.Path:
    return workdir / "shards" / f"chunk-{index:06d}.parquet"


def check_manifest(workdir: pathlib.Path, config: ml_collections.ConfigDict, n_items: int) -> None:
    """Bind a workdir to the config that defines its items; refuse to mix two sweeps."""
    fp = config_fingerprint(config, FINGERPRINT_FIELDS)
    manifest = {"config": config.get("config_spec", ""), "fingerprint": fp, "items": n_items,
                "chunk_size": config.run.chunk_size}
    path = workdir / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("fingerprint") != fp:
            raise InputError(f"--workdir {workdir}: holds a sweep of a different config "
                             f"({old.get('config')!r}, items={old.get('items')}); use a new --workdir")
        return
    io.write_text(path, json.dumps(manifest, indent=2))


@dataclasses.dataclass
class SweepStats:
    chunks_total: int
    chunks_this_host: int
    chunks_skipped: int
    chunks_done: int
    items_done: int
    seconds: float


def pending_chunks(workdir: pathlib.Path, config: ml_collections.ConfigDict, items: Sequence[WorkItem],
                   process_index: int = 0, process_count: int = 1) -> list[int]:
    """Indices of this host's chunks that have no shard yet."""
    n = len(chunk_items(items, config.run.chunk_size))
    return [i for i in range(n) if i % process_count == process_index
            and not shard_path(workdir, i).exists()]


def run_chunks(workdir: str | os.PathLike, config: ml_collections.ConfigDict, items: Sequence[WorkItem],
               process_chunk: Callable[[list[WorkItem]], list[dict[str, Any]]], *,
               process_index: int = 0, process_count: int = 1, writer: bool = True,
               lockstep: bool = False, progress: bool = True) -> SweepStats:
    """Run every chunk of this host that has no shard yet; write each shard atomically.

    ``lockstep``: the mesh spans several hosts, which must all run the same chunks in the same
    order; process 0's view of which shards exist is broadcast, and only the ``writer`` writes.
    """
    workdir = pathlib.Path(workdir)
    chunks = chunk_items(items, config.run.chunk_size)
    if writer:
        check_manifest(workdir, config, len(items))
    mine = [i for i in range(len(chunks)) if i % process_count == process_index]
    todo = pending_chunks(workdir, config, items, process_index, process_count)
    if lockstep:
        from valueprobe_jax.parallel.multihost import agree  # noqa: PLC0415

        pending = set(todo)
        todo = [i for i, t in zip(mine, agree([i in pending for i in mine])) if t]
    t0 = time.time()
    n_items = sum(len(chunks[i]) for i in todo)
    bar = tqdm(total=n_items, unit="item", desc=f"{config.experiment} host {process_index}",
               disable=not progress, smoothing=0.1)
    done = 0
    for i in todo:
        rows = process_chunk(chunks[i])
        got = sorted(r["key"] for r in rows)
        want = sorted(it.key for it in chunks[i])
        if got != want:
            raise RuntimeError(f"chunk {i}: engine returned rows for {len(got)} of {len(want)} items")
        if writer:
            results.write_rows_atomic(rows, shard_path(workdir, i))
        done += len(rows)
        bar.update(len(rows))
    bar.close()
    return SweepStats(len(chunks), len(mine), len(mine) - len(todo), len(todo), done, time.time() - t0)
