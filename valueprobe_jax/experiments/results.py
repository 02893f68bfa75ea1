"""The result-row contract and its Parquet I/O.

One row per (model, experiment, style, variant, country, qid) for value probes, and one per
(model, qid, scenario, action, rating template) for action ratings; both share one schema so a
results directory reads as one table. Rows keep the raw numbers (label logits, option
log-likelihoods, generations) so every metric can be recomputed later. Writes are atomic
(temporary file in the same directory, then rename), so a killed sweep never leaves half a shard.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.dataset as pads

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


def parquet_files(results_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Every finished Parquet file under a results dir (temporary files excluded)."""
    root = pathlib.Path(results_dir)
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))
    # a sweep dir holds shards/ and, after `valueprobe merge`, the same rows in results.parquet
    merged = {p.parent.parent / "results.parquet" for p in files if p.parent.name == "shards"}
    return [p for p in files if p not in merged]


def read_results(results_dir: str | os.PathLike, columns: Iterable[str] | None = None) -> pa.Table:
    """Read all result shards of a directory (or one file) as one table."""
    files = parquet_files(results_dir)
    if not files:
        raise InputError(f"{results_dir}: no result Parquet files found")
    ds = pads.dataset([str(f) for f in files], format="parquet", schema=SCHEMA)
    return ds.to_table(columns=list(columns) if columns is not None else None)
