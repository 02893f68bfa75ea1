"""Merge per-host (or per-chunk) Parquet result shards into one file, one row per work-item key.

Hosts of a pod write their own shards; a re-run with a different host count can write the same
item twice. The merge keeps the first row of each key in sorted-path order, counts duplicates
(and duplicates whose contents differ, which would mean a nondeterministic engine), sorts rows by
key, and writes the output through ``io`` (whole or not at all). Shards and output may be local or
on object storage (gs://...). A shard that cannot be read stops the merge with its name: resume
the sweep (same --workdir) to recompute it, rather than merge a result with rows missing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import pyarrow as pa

from valueprobe_jax import io
from valueprobe_jax.errors import InputError
from valueprobe_jax.experiments.results import read_table_file, write_table_atomic


@dataclasses.dataclass(frozen=True)
class MergeSummary:
    shards: int
    rows_in: int
    rows_out: int
    duplicates: int  # rows dropped because their key was already seen
    conflicting: int  # of those, rows whose other columns differ from the kept row

    def __str__(self) -> str:
        s = (f"{self.shards} shard(s), {self.rows_in} rows in, {self.rows_out} rows out, "
             f"{self.duplicates} duplicate(s) dropped")
        return s + (f" ({self.conflicting} with different contents)" if self.conflicting else "")


def merge_tables(tables: Sequence[pa.Table], key: Sequence[str] = ("key",)) -> tuple[pa.Table, int, int]:
    """Concatenate, keep the first row per key, sort by key. Returns (table, duplicates, conflicts)."""
    if not tables:
        raise InputError("merge: no shards to merge")
    table = pa.concat_tables(tables, promote_options="default")
    missing = [k for k in key if k not in table.column_names]
    if missing:
        raise InputError(f"merge: shards have no key column(s) {missing}")
    keys = list(zip(*(table.column(k).to_pylist() for k in key)))
    first: dict[tuple, int] = {}
    dup_rows: list[tuple[int, int]] = []
    for i, k in enumerate(keys):
        if k in first:
            dup_rows.append((first[k], i))
        else:
            first[k] = i
    conflicts = 0
    if dup_rows:
        rows = table.to_pylist()
        conflicts = sum(rows[a] != rows[b] for a, b in dup_rows)
    kept = table.take(pa.array(sorted(first.values()), pa.int64()))
    kept = kept.sort_by([(k, "ascending") for k in key])
    return kept, len(dup_rows), conflicts


def merge_shards(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike, *,
                 key: Sequence[str] = ("key",)) -> MergeSummary:
    """Merge Parquet shards into ``out_path``, deduplicated by ``key`` (first in sorted path order)."""
    paths = sorted({io.as_path(p) for p in paths}, key=str)
    tables = []
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: shard file not found")
        try:
            tables.append(read_table_file(p))
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"{p}: unreadable shard ({type(e).__name__}); rerun the sweep with "
                             "the same --workdir to recompute it, then merge again") from None
    table, dups, conflicts = merge_tables(tables, key)
    write_table_atomic(table, out_path)
    return MergeSummary(len(paths), sum(t.num_rows for t in tables), table.num_rows, dups, conflicts)
