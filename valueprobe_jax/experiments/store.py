"""The durable, resumable chunk store that sweeps, synthesis and `valueprobe verify` share.

A workdir holds ``manifest.json`` (the settings its chunks were made with, bound by a fingerprint)
and folders of chunks, each one file written once through ``io`` (whole or not at all). A run
computes only the chunks that are missing or fail their check, so a rerun of the same command
after any interruption continues where it stopped and ends with the same files as an
uninterrupted run.

- **Manifest.** ``Workdir.bind`` writes the manifest on first use; a later run whose bound fields
  differ gets one InputError line naming the workdir and the field, never a mix of two runs.
- **Verified on resume.** ``Chunks.load`` parses a chunk and runs the caller's check (for a sweep
  shard: the Parquet file reads, its page checksums hold and its keys are exactly the chunk's
  items). A chunk that fails is reported with a ``CorruptChunkWarning`` and computed again; it is
  never trusted.
- **Lock: a second runner is refused** (not cooperative chunk claiming, which would change which
  host owns which chunk). ``Workdir`` takes ``lock.p<index>.json`` (created if absent with a hard link) for the
  process index it runs as, so the hosts of a pod (each its own index, chunks ``i % count``) never
  block each other, while a second runner with the same index gets an InputError naming the
  workdir and the holder (pid@host). A lock left by a dead process on the same host (the pid is
  gone) is taken over with a warning; one from another host must be deleted by hand (the error
  says which file). Lockstep followers write nothing and take no lock.
  On object storage there is no create-if-absent through epath, so no lock is taken: what holds
  there is chunk ownership by process index plus writes that are whole objects of deterministic
  content; two runners on one bucket workdir duplicate work but cannot leave a torn or mixed chunk.
- **SIGTERM** (a preempted TPU VM): inside ``with Workdir(...)`` SIGTERM only sets a flag; the
  runner finishes the chunk (or batch) in hand, writes it, and ``stop_if_asked`` (called before
  the next chunk starts, in any stage) raises ``Stopped``.
  The CLI prints the resume hint and exits with ``STOPPED_EXIT_CODE`` (143 = 128 + SIGTERM, so a
  wrapper sees the work is not complete and does not merge a partial result).
- **Fault injection** (``$VALUEPROBE_FAULT``): ``after_chunk:K`` exits hard (like kill -9, exit code
  ``io.FAULT_EXIT_CODE``) right after this process has written its K-th chunk (K counts from 1);
  ``sigterm_at_chunk:K`` sends SIGTERM to this process when it starts its K-th chunk;
  ``before_rename`` (in ``io``) exits between the complete temp file and its rename.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import threading
import warnings
from typing import Any, Callable, Sequence

from valueprobe_jax import io
from valueprobe_jax.errors import InputError
from valueprobe_jax.experiments import results

STOPPED_EXIT_CODE = 143  # 128 + SIGTERM: stopped cleanly, not finished; rerun to resume


class CorruptChunkWarning(UserWarning):
    """A stored chunk could not be read or did not hold what it should; it is recomputed."""


class Stopped(Exception):
    """SIGTERM arrived; the chunk in hand was written and the run stopped cleanly."""

    def __init__(self, workdir: str, done: int, left: int):
        super().__init__(f"stopped by SIGTERM after {done} chunk(s) of this run; {left} left")
        self.workdir, self.done, self.left = workdir, done, left

    def hint(self, command: str) -> str:
        """The two lines a CLI prints: what happened and how to resume."""
        return (f"{command}: {self}\nresume with: {command} ... (the same arguments, same "
                f"--workdir {self.workdir})")


@dataclasses.dataclass(frozen=True)
class Codec:
    """How one kind of chunk is stored: file suffix, writer (through ``io``) and reader."""

    suffix: str
    write: Callable[[Any, Any], Any]  # (path, obj) -> None
    read: Callable[[Any], Any]        # path -> obj; raises on an unreadable file


def _read_json(path: Any) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Any, obj: Any) -> None:
    io.write_text(path, json.dumps(obj, ensure_ascii=False, indent=1) + "\n")


JSON = Codec(".json", _write_json, _read_json)
# result shards: a table with the result schema (page checksums verified on read)
PARQUET = Codec(".parquet", lambda path, table: results.write_table_atomic(table, path),
                lambda path: results.read_table_file(path))


class Chunks:
    """One folder of chunks of a workdir, named by the caller (``chunk-000012``, a question id)."""

    def __init__(self, workdir: "Workdir", folder: str, codec: Codec):
        self.workdir, self.folder, self.codec = workdir, folder, codec
        self.dir = workdir.root / folder if folder else workdir.root

    def path(self, name: str) -> Any:
        return self.dir / (name + self.codec.suffix)

    def load(self, name: str, check: Callable[[Any], str | None] | None = None) -> Any | None:
        """The chunk's contents, or None when it is missing or fails to read or to pass
        ``check`` (which returns a reason, or None when the contents are right)."""
        path = self.path(name)
        if not path.exists():
            return None
        try:
            obj = self.codec.read(path)
        except Exception as e:  # noqa: BLE001 (any unreadable file is recomputed, never trusted)
            reason = f"unreadable ({type(e).__name__}: {str(e)[:120]})"
        else:
            reason = check(obj) if check is not None else None
            if reason is None:
                return obj
        warnings.warn(f"{path}: {reason}; computing this chunk again", CorruptChunkWarning,
                      stacklevel=2)
        return None

    def save(self, name: str, obj: Any) -> None:
        """Write one chunk (whole or not at all), then run the ``after_chunk`` fault hook."""
        self.codec.write(self.path(name), obj)
        self.workdir._written()


class Workdir:
    """A run's workdir (local path or ``gs://...``): manifest, lock, SIGTERM, chunk folders.

    Use as a context manager around the compute loop::

        with Workdir(path, lock_index=0) as wd:
            wd.bind(manifest, keys=("fingerprint",))
            shards = wd.chunks("shards", PARQUET)
            for name in todo:
                wd.stop_if_asked(left=...)  # SIGTERM seen: stop before the next chunk
                wd.start_chunk()
                shards.save(name, compute(name))
    """

    def __init__(self, root: io.PathLike, *, lock_index: int | None = 0):
        self.text = os.fspath(root)
        self.remote = io.is_remote(root)
        self.root = io.as_path(root)
        self.lock_index = None if self.remote else lock_index
        self._lock_path: Any = None
        self._stop = threading.Event()
        self._old_handler: Any = None
        self._started = self._written_count = 0

    # ---------------------------------------------------------------- manifest
    def bind(self, record: dict[str, Any], keys: Sequence[str], *,
             hints: dict[str, str] | None = None, name: str = "manifest.json") -> None:
        """Bind the workdir to ``record`` (written if absent): the ``keys`` fields must match."""
        path = self.root / name
        if not path.exists():
            io.write_text(path, json.dumps(record, indent=2))
            return
        try:
            old = json.loads(path.read_text())
        except ValueError:
            raise InputError(f"{path}: unreadable manifest; delete it (and the chunks next to "
                             "it) or use a new --workdir") from None
        for key in keys:
            if old.get(key) != record.get(key):
                hint = (hints or {}).get(key, "use a new --workdir")
                raise InputError(f"--workdir {self.text}: holds chunks made with other settings "
                                 f"({key} differs; made by config {old.get('config')!r}); {hint}")

    def manifest(self, name: str = "manifest.json") -> dict[str, Any] | None:
        path = self.root / name
        return json.loads(path.read_text()) if path.exists() else None

    def chunks(self, folder: str, codec: Codec = JSON) -> Chunks:
        return Chunks(self, folder, codec)

    # ---------------------------------------------------------------- lock
    def _lock(self) -> None:
        if self.lock_index is None:
            return
        path = self.root / f"lock.p{self.lock_index}.json"
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        self.root.mkdir(parents=True, exist_ok=True)
        # the lock appears with its contents (a temp file hard-linked into place: create-if-absent)
        tmp = self.root / f".lock.p{self.lock_index}.{os.getpid()}.tmp"
        with open(os.fspath(tmp), "w") as f:  # not an output file: no io fault points here
            f.write(json.dumps(me))
        try:
            for _ in range(3):
                try:
                    os.link(os.fspath(tmp), os.fspath(path))
                except FileExistsError:
                    holder = _read_lock(path)
                    if holder is not None and not _is_dead(holder):
                        raise InputError(
                            f"--workdir {self.text}: in use by pid {holder.get('pid')} on "
                            f"{holder.get('host')} (lock {path}); wait for it, or delete the "
                            "lock if that process is gone") from None
                    warnings.warn(f"{path}: stale lock of {holder} (process gone); taking it "
                                  "over", stacklevel=3)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    continue
                self._lock_path = path
                return
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise InputError(f"--workdir {self.text}: could not take the lock {path}")

    def _unlock(self) -> None:
        if self._lock_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_path)
            self._lock_path = None

    # ---------------------------------------------------------------- SIGTERM
    def __enter__(self) -> "Workdir":
        self._lock()
        if threading.current_thread() is threading.main_thread():
            self._old_handler = signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old_handler is not None:
            signal.signal(signal.SIGTERM, self._old_handler)
            self._old_handler = None
        self._unlock()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def start_chunk(self) -> None:
        """Called as each chunk (or batch) starts: the ``sigterm_at_chunk`` fault hook."""
        self._started += 1
        if os.environ.get(io.FAULT_ENV) == f"sigterm_at_chunk:{self._started}":
            os.kill(os.getpid(), signal.SIGTERM)

    def _written(self) -> None:
        self._written_count += 1
        io.fault_point(f"after_chunk:{self._written_count}")

    def stop_if_asked(self, left: int, asked: bool | None = None) -> None:
        """Raise ``Stopped`` if SIGTERM arrived and ``left`` chunks remain (call before starting
        each chunk or batch); ``asked`` overrides this process's flag (lockstep hosts follow
        process 0)."""
        if (self._stop.is_set() if asked is None else asked) and left > 0:
            raise Stopped(self.text, self._written_count, left)


def _read_lock(path: Any) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # vanished, or written half by a process killed in between: stale


def _is_dead(holder: dict[str, Any]) -> bool:
    """Whether a lock's holder is known to be gone (only knowable on this host)."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False
