"""The result-row contract and its Parquet I/O.

One row per (model, experiment, style, variant, country, qid) for value probes, and one per
(model, qid, scenario, action, rating template) for action ratings; both share one schema so a
results directory reads as one table. Rows keep the raw numbers (label logits, option
log-likelihoods, generations) so every metric can be recomputed later. Writes go through
``io`` (whole or not at all, locally or on a bucket); reads verify each file and skip one that is
unreadable or corrupt with a warning (the sweep that made it recomputes it on resume).
"""

from __future__ import annotations

import os
import pathlib
import warnings
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from valueprobe_jax import io
from valueprobe_jax.errors import InputError

_f64_list = pa.list_(pa.float64())

SCHEMA = pa.schema([
    ("key", pa.string()),  # stable work-item key
    ("model", pa.string()),
    ("experiment", pa.string()),
    ("style", pa.string()),
    ("variant", pa.string()),
    ("country", pa.string()),  # null = no country prompt
    ("qid", pa.string()),
    ("labels", pa.list_(pa.string())),  # displayed labels, display order
    ("display_order", pa.list_(pa.int32())),  # canonical index of each displayed option
    ("token_logits", _f64_list),  # display order, bare label ("A")
    ("token_logits_space", _f64_list),  # display order, label with a leading space (" A")
    ("label_multi_token", pa.list_(pa.bool_())),  # label needed >1 token (first token used)
    ("option_logprob", _f64_list),  # display order, summed log-likelihood of the continuation
    ("option_ntokens", pa.list_(pa.int32())),  # display order
    ("p_token", _f64_list),  # canonical order
    ("p_seq", _f64_list),  # canonical order
    ("p_text", _f64_list),  # canonical order, null when the text method did not run
    ("generations", pa.list_(pa.string())),
    ("parsed", pa.list_(pa.int32())),  # canonical index or null per generation
    ("n_prompt_tokens", pa.int32()),
    ("boundary_split", pa.bool_()),  # tokenizer merged across the prompt/answer boundary
    ("seed", pa.int64()),
    ("date_string", pa.string()),  # YYYY-MM-DD a dated chat template wrote (pinned per sweep); null: none pinned
    # action-rating rows
    ("scenario_id", pa.string()),
    ("action", pa.string()),  # "A" (first option's end of the scale) or "B" (last option's end)
    ("template", pa.int32()),  # rating template index 0..2
    ("rating_text", _f64_list),  # parsed rating (1..10 or null) of each generation
    ("rating_expected", pa.float64()),  # expectation over the next-token distribution of 1..10
    ("rating_probs", _f64_list),  # P(1..10), normalised over the ten ratings
])

# what a value-probe row fills: key .. seed (the columns after it are the action ratings')
PROBE_ROW_COLUMNS = tuple(SCHEMA.names[:SCHEMA.get_field_index("scenario_id")])


def to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows (dicts with any subset of the schema's columns) -> a table with the full schema."""
    unknown = {k for r in rows for k in r} - set(SCHEMA.names)
    if unknown:
        raise ValueError(f"result rows have columns outside the schema: {sorted(unknown)}")
    cols = {name: [r.get(name) for r in rows] for name in SCHEMA.names}
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def write_rows_atomic(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write rows as one Parquet file; the file appears whole or not at all."""
    write_table_atomic(to_table(rows), path)


def write_table_atomic(table: pa.Table, path: str | os.PathLike) -> None:
    """Write a Parquet file via a temporary file in the same directory, then rename."""
    io.write_parquet(path, table)


def parquet_files(results_dir: str | os.PathLike) -> list[Any]:
    """Every finished Parquet file under a results dir (temporary files excluded); local paths
    as ``pathlib.Path``, remote ones (``gs://...``) as ``epath.Path``."""
    root: Any = io.as_path(results_dir) if io.is_remote(results_dir) else pathlib.Path(results_dir)
    if root.is_file():
        return [root]
    files = io.find_files(root, ".parquet")
    # a sweep dir holds shards/ and, after `valueprobe merge`, the same rows in results.parquet
    merged = {str(p.parent.parent / "results.parquet") for p in files if p.parent.name == "shards"}
    return [p for p in files if str(p) not in merged]


def read_table_file(path: Any, columns: Iterable[str] | None = None) -> pa.Table:
    """One Parquet file (local or remote) with page checksums verified; raises on a torn or
    corrupt file (pyarrow.ArrowException or OSError)."""
    cols = list(columns) if columns is not None else None
    if io.is_remote(path):
        with io.as_path(path).open("rb") as f:
            return pq.read_table(pa.BufferReader(f.read()), columns=cols,
                                 page_checksum_verification=True)
    return pq.read_table(os.fspath(path), columns=cols, page_checksum_verification=True)


def _conform(table: pa.Table, columns: list[str] | None) -> pa.Table:
    """A file's table in the result schema (missing columns null), restricted to ``columns``."""
    names = columns if columns is not None else SCHEMA.names
    arrays = [table.column(n).cast(SCHEMA.field(n).type) if n in table.column_names
              else pa.nulls(table.num_rows, SCHEMA.field(n).type) for n in names]
    return pa.Table.from_arrays(arrays, schema=pa.schema([SCHEMA.field(n) for n in names]))


def read_results(results_dir: str | os.PathLike, columns: Iterable[str] | None = None) -> pa.Table:
    """Read all result shards of a directory (or one file) as one table; a file that cannot be
    read is skipped with a warning (never trusted, never fatal)."""
    files = parquet_files(results_dir)
    if not files:
        raise InputError(f"{results_dir}: no result Parquet files found")
    cols = list(columns) if columns is not None else None
    tables = []
    for f in files:
        try:
            tables.append(_conform(read_table_file(f), cols))
        except (pa.ArrowException, OSError) as e:
            warnings.warn(f"{f}: unreadable result file skipped ({type(e).__name__}: "
                          f"{str(e)[:120]}); resume its sweep to recompute it", stacklevel=2)
    if not tables:
        raise InputError(f"{results_dir}: no readable result Parquet files")
    return pa.concat_tables(tables)
