"""The one writer of every output file (results, shards, manifests, reports, figures, caches),
and the one path abstraction (``etils.epath``) for places that may be a bucket.

A file appears whole or not at all. On a local filesystem the bytes go to a temporary file in the
same directory, which is flushed, fsync'ed and renamed over the target, and the directory is
fsync'ed so the rename survives a power cut; the file gets the mode the user's umask gives a new
file (0644 under umask 022), not the 0600 of ``mkstemp``: results are shared by the people who
share the disk. On object storage (a path with a scheme: ``gs://``, ``s3://``, ...) there is no
rename (gcsfs/s3fs emulate it by copy + delete, which is not atomic); instead the bytes are built
in memory and the final object is written once, which an object store makes visible whole or not
at all.

Fault injection for the durability tests (``$VALUEPROBE_FAULT``): ``before_rename`` exits hard
after the bytes are complete and before they become visible at the target (local: between the
temp file and the rename; remote: before the single object write); the chunk store adds
``after_chunk:K`` and ``sigterm_at_chunk:K`` (see ``experiments/store.py``).
"""

from __future__ import annotations

import contextlib
import glob
import io as _stdio
import json
import os
import pathlib
import re
import socket
import tempfile
from typing import IO, Any, Callable, Iterable, Iterator

PathLike = str | os.PathLike

FAULT_ENV = "VALUEPROBE_FAULT"
FAULT_EXIT_CODE = 86


def is_remote(path: PathLike) -> bool:
    """Whether a path names object storage (``scheme://...``; ``file://`` is local)."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def as_path(path: PathLike) -> Any:
    """An ``etils.epath.Path`` (local or remote; the same pathlib-like API for both)."""
    from etils import epath  # noqa: PLC0415 (only needed where a path may be remote)

    text = os.fspath(path)
    return epath.Path(text[len("file://"):] if text.startswith("file://") else text)


def output_path(path: PathLike) -> Any:
    """A place to write under: ``pathlib.Path`` for a local path, ``epath.Path`` for a bucket."""
    return as_path(path) if is_remote(path) else pathlib.Path(path)


def cache_root() -> pathlib.Path:
    """Where converted checkpoints, downloaded data and compiled programs are cached:
    ``$VALUEPROBE_CACHE`` (default ``~/.cache/valueprobe_jax``)."""
    base = os.environ.get("VALUEPROBE_CACHE")
    return pathlib.Path(base) if base else pathlib.Path.home() / ".cache" / "valueprobe_jax"


def find_files(root: Any, suffix: str) -> list[Any]:
    """Files under ``root`` (any depth) whose names end with ``suffix``, sorted, dot files left
    out; for a local ``pathlib.Path`` as pathlib paths, else through ``epath.Path.walk``."""
    if isinstance(root, pathlib.Path):
        found = root.rglob(f"*{suffix}")
    else:
        found = (top / name for top, _dirs, names in as_path(root).walk()
                 for name in names if name.endswith(suffix))
    return sorted((p for p in found if not p.name.startswith(".")), key=str)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file under the current umask."""
    return 0o666 & ~_umask()


def new_dir_mode() -> int:
    """The mode ``mkdir`` would give a new directory under the current umask."""
    return 0o777 & ~_umask()


def fault_point(name: str) -> None:
    """Exit hard (no cleanup, like kill -9) when ``$VALUEPROBE_FAULT`` names this point."""
    if os.environ.get(FAULT_ENV) == name:
        os._exit(FAULT_EXIT_CODE)


def _fsync_dir(directory: pathlib.Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsync'ed
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any]) -> Any:
    """Call ``write(f)`` on a binary file object, then put the result at ``path`` atomically.

    Returns a ``pathlib.Path`` for a local target, an ``epath.Path`` for a remote one."""
    if is_remote(path):
        return _write_object(as_path(path), write)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        fault_point("before_rename")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return path


def _write_object(path: Any, write: Callable[[IO[bytes]], Any]) -> Any:
    """Object storage: build the bytes in memory, then write the final object once."""
    buf = _stdio.BytesIO()
    write(buf)
    fault_point("before_rename")
    path.parent.mkdir(parents=True, exist_ok=True)  # a no-op on buckets, needed by fakes
    path.write_bytes(buf.getvalue())
    return path


def write_bytes(path: PathLike, data: bytes) -> pathlib.Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: PathLike, text: str) -> pathlib.Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, obj: Any, *, indent: int | None = 2, **kw: Any) -> pathlib.Path:
    return write_text(path, json.dumps(obj, indent=indent, **kw) + ("\n" if indent else ""))


def write_jsonl(path: PathLike, rows: Iterable[dict[str, Any]]) -> pathlib.Path:
    """JSON Lines, one object per line (non-ASCII kept as is)."""
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_parquet(path: PathLike, table: Any) -> Any:
    """A ``pyarrow.Table`` as one Parquet file, with page checksums so that flipped bytes are
    caught when the file is read back (``results.read_table_file``)."""
    import pyarrow.parquet as pq

    return atomic_write(path, lambda f: pq.write_table(table, f, write_page_checksum=True))


def save_figure(fig: Any, path: PathLike, **savefig_kw: Any) -> pathlib.Path:
    """A matplotlib figure, in the format named by the path's suffix."""
    fmt = pathlib.PurePosixPath(os.fspath(path)).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, **savefig_kw))


# a temporary sibling's name: ".{target}.pid{pid}@{host}.{random}.tmp"
_PARTIAL = re.compile(r"\.pid(\d+)@(.+)\.[^.]+\.tmp$")


def _partial_prefix(path: pathlib.Path) -> str:
    """Name prefix of ``atomic_dir``'s temporary sibling: the target, then the writing process,
    so that a later writer can tell a killed writer's leftovers from a live one's."""
    return f".{path.name}.pid{os.getpid()}@{socket.gethostname()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_partials(path: PathLike) -> list[pathlib.Path]:
    """Delete the temporary siblings of ``path`` that killed ``atomic_dir`` writers left (a
    converted 70B checkpoint's is 140 GB); return them. Only a writer on this host whose process
    is gone counts as killed: a live writer's, another host's and unnamed ones are kept."""
    import shutil

    path = pathlib.Path(path)
    if not path.parent.is_dir():
        return []
    host, removed = socket.gethostname(), []
    for p in sorted(path.parent.glob(f".{glob.escape(path.name)}.pid*.tmp")):
        m = _PARTIAL.fullmatch(p.name[len(path.name) + 1:])
        if m and m.group(2) == host and not _alive(int(m.group(1))) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[pathlib.Path]:
    """A temporary sibling directory to fill; renamed to ``path`` when the block ends cleanly.

    Removes what killed writers of ``path`` left first (``remove_stale_partials``). Raises
    FileExistsError (after cleaning up) if ``path`` appeared meanwhile."""
    import shutil

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=_partial_prefix(path), suffix=".tmp",
                                        dir=path.parent))
    try:
        os.chmod(tmp, new_dir_mode())
        yield tmp
        fault_point("before_rename")
        os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(path.parent)
