"""Resumable sweeps: a config expands into work items with stable keys, fixed chunks of items are
pushed through the engine, and each chunk is one Parquet shard in the durable store
(``experiments/store.py``: manifest bound to the config, shards verified on resume, workdir lock,
SIGTERM ends after the chunk in hand).

Resumption is exact: chunks are cut from the full, deterministic item list (not from what is
left), so a restarted sweep runs the remaining chunks with the same composition as an
uninterrupted one and produces identical rows. A shard either exists whole or not at all, so a
kill at any moment loses at most the chunk in flight; a shard that is there but torn or corrupt
(a bad copy, flipped bytes) fails its check and is computed again. On a multi-host pod each host
takes chunks ``i % process_count == process_index`` and writes its own shards into the same
directory layout (a local path or ``gs://...``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import time
from typing import Any, Callable, Sequence

import ml_collections
from tqdm import tqdm

from valueprobe_jax.experiments import results, store
from valueprobe_jax.probing.work import probe_cells, probe_countries
from valueprobe_jax.experiments.config_loading import config_fingerprint
from valueprobe_jax.errors import InputError
from valueprobe_jax.probing import prompts
from valueprobe_jax.parallel import multihost

# Config fields that define the work items and their results (a workdir is bound to them).
FINGERPRINT_FIELDS = ("experiment", "procedure", "max_questions", "input", "model", "probe",
                      "actions", "run")
# ... except the pinned date: "" means "the sweep's first day", resolved once and recorded in the
# manifest (``pin_date_string``), so the fingerprint must not change with the day a run starts
FINGERPRINT_EXCLUDE = ("probe.date_string",)


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


SHARDS = "shards"


def shard_name(index: int) -> str:
    return f"chunk-{index:06d}"


def shard_path(workdir: pathlib.Path, index: int) -> pathlib.Path:
    return workdir / SHARDS / f"{shard_name(index)}.parquet"


def manifest_record(config: ml_collections.ConfigDict, n_items: int) -> dict[str, Any]:
    return {"config": config.get("config_spec", ""),
            "fingerprint": config_fingerprint(config, FINGERPRINT_FIELDS, FINGERPRINT_EXCLUDE),
            "items": n_items, "chunk_size": config.run.chunk_size,
            "date_string": config.probe.get("date_string", "")}


def first_day(wd: store.Workdir, asked: str = "", *, field: str = "date_string") -> str:
    """The date (YYYY-MM-DD) dated chat templates write in the run of ``wd``: its manifest's
    ``date_string`` when a first run recorded one (a resumed run renders the prompts of its first
    day; an explicit different ``asked`` is an error), else ``asked``, else today
    (``prompts.today``). Sweeps, synthesis and verify all pin their prompts through this."""
    if asked:
        prompts.parse_date(asked)
    old = (wd.manifest() or {}).get("date_string")
    if old and asked and asked != old:
        raise InputError(f"--workdir {wd.text}: its run pinned {field}={old}, not "
                         f"{asked}; drop the override to resume, or use a new --workdir")
    return old or asked or prompts.today()


def pin_date_string(workdir: str | os.PathLike | store.Workdir,
                    config: ml_collections.ConfigDict) -> str:
    """Resolve ``probe.date_string`` for this sweep (``first_day``) and set it on ``config``.
    The fingerprint leaves the field out, so the manifest binds the rest of the config and
    records the date."""

    wd = workdir if isinstance(workdir, store.Workdir) else store.Workdir(workdir, lock_index=None)
    resolved = first_day(wd, config.probe.get("date_string", ""), field="probe.date_string")
    with config.probe.unlocked():
        config.probe.date_string = resolved
    return resolved


def check_manifest(workdir: str | os.PathLike | store.Workdir, config: ml_collections.ConfigDict,
                   n_items: int) -> None:
    """Bind a workdir to the config that defines its items; refuse to mix two sweeps."""
    wd = workdir if isinstance(workdir, store.Workdir) else store.Workdir(workdir, lock_index=None)
    wd.bind(manifest_record(config, n_items), ("fingerprint",),
            hints={"fingerprint": "use a new --workdir"})


def open_workdir(workdir: str | os.PathLike | store.Workdir, *, process_index: int = 0,
                 writer: bool = True) -> store.Workdir:
    """A store on ``workdir`` that locks this host's share (lockstep followers take no lock)."""
    if isinstance(workdir, store.Workdir):
        return workdir
    return store.Workdir(workdir, lock_index=process_index if writer else None)


@dataclasses.dataclass
class SweepStats:
    chunks_total: int
    chunks_this_host: int
    chunks_skipped: int
    chunks_done: int
    items_done: int
    seconds: float


def _shard_check(chunk: Sequence[WorkItem]) -> Callable[[Any], str | None]:
    """A shard is right when it holds exactly one row for each item of its chunk."""
    want = sorted(it.key for it in chunk)

    def check(table: Any) -> str | None:
        if "key" not in table.column_names:
            return "has no key column"
        got = sorted(table.column("key").to_pylist())
        if got != want:
            return f"holds {len(got)} rows whose keys are not the chunk's {len(want)} items"
        return None

    return check


def pending_chunks(workdir: str | os.PathLike | store.Workdir, config: ml_collections.ConfigDict,
                   items: Sequence[WorkItem], process_index: int = 0,
                   process_count: int = 1) -> list[int]:
    """Indices of this host's chunks that have no shard yet, or a shard that fails its check."""
    chunks = chunk_items(items, config.run.chunk_size)
    shards = open_workdir(workdir, writer=False).chunks(SHARDS, store.PARQUET)
    return [i for i in range(len(chunks)) if i % process_count == process_index
            and shards.load(shard_name(i), _shard_check(chunks[i])) is None]


def run_chunks(workdir: str | os.PathLike | store.Workdir, config: ml_collections.ConfigDict,
               items: Sequence[WorkItem],
               process_chunk: Callable[[list[WorkItem]], list[dict[str, Any]]], *,
               process_index: int = 0, process_count: int = 1, writer: bool = True,
               lockstep: bool = False, progress: bool = True) -> SweepStats:
    """Run every chunk of this host that has no (valid) shard yet; write each shard once.

    ``lockstep``: the mesh spans several hosts, which must all run the same chunks in the same
    order; process 0's view of which shards exist (and of SIGTERM) is broadcast, and only the
    ``writer`` writes. Raises ``store.Stopped`` after the chunk in hand when SIGTERM arrived.
    """
    wd = open_workdir(workdir, process_index=process_index, writer=writer)
    entered = contextlib.nullcontext(wd) if isinstance(workdir, store.Workdir) else wd
    with entered:
        return _run_chunks(wd, config, items, process_chunk, process_index, process_count,
                           writer, lockstep, progress)


def _run_chunks(wd: store.Workdir, config: ml_collections.ConfigDict, items: Sequence[WorkItem],
                process_chunk: Callable[[list[WorkItem]], list[dict[str, Any]]],
                process_index: int, process_count: int, writer: bool, lockstep: bool,
                progress: bool) -> SweepStats:
    chunks = chunk_items(items, config.run.chunk_size)
    if writer:
        check_manifest(wd, config, len(items))
    mine = [i for i in range(len(chunks)) if i % process_count == process_index]
    todo = pending_chunks(wd, config, items, process_index, process_count)
    agree = multihost.agree if lockstep else None  # hosts in lockstep decide together
    if lockstep:
        pending = set(todo)
        todo = [i for i, t in zip(mine, multihost.agree([i in pending for i in mine])) if t]
    shards = wd.chunks(SHARDS, store.PARQUET)
    t0 = time.time()
    n_items = sum(len(chunks[i]) for i in todo)
    bar = tqdm(total=n_items, unit="item", desc=f"{config.experiment} host {process_index}",
               disable=not progress, smoothing=0.1)
    done = 0
    for n, i in enumerate(todo):
        # lockstep hosts follow process 0's SIGTERM, so they all stop before the same chunk
        asked = agree([wd.stop_requested])[0] if agree is not None else None
        wd.stop_if_asked(left=len(todo) - n, asked=asked)
        wd.start_chunk()
        rows = process_chunk(chunks[i])
        got = sorted(r["key"] for r in rows)
        want = sorted(it.key for it in chunks[i])
        if got != want:
            raise RuntimeError(f"chunk {i}: engine returned rows for {len(got)} of {len(want)} items")
        if writer:
            shards.save(shard_name(i), results.to_table(rows))
        done += len(rows)
        bar.update(len(rows))
    bar.close()
    return SweepStats(len(chunks), len(mine), len(mine) - len(todo), len(todo), done, time.time() - t0)
