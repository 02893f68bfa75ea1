"""The one writer: whole files or none, the umask's mode (not mkstemp's 0600), fault points."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from valueprobe_jax import io


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)
    old = os.umask(0o022)
    os.umask(old)
    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_umask_mode(tmp_path, umask, mask, mode):
    umask(mask)
    for name, write in [("a.txt", lambda p: io.write_text(p, "x")),
                        ("b.json", lambda p: io.write_json(p, {"a": 1})),
                        ("c.jsonl", lambda p: io.write_jsonl(p, [{"a": 1}, {"b": "\u2019"}]))]:
        write(tmp_path / name)
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    with io.atomic_dir(tmp_path / "d") as d:
        io.write_text(d / "f", "y")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~mask
    assert (tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines() == ['{"a": 1}', '{"b": "\u2019"}']


def test_parquet_and_figure_modes(tmp_path, umask):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyarrow as pa
    import pyarrow.parquet as pq

    umask(0o022)
    io.write_parquet(tmp_path / "t.parquet", pa.table({"x": [1, 2]}))
    assert pq.read_table(tmp_path / "t.parquet").to_pydict() == {"x": [1, 2]}
    fig = plt.figure()
    io.save_figure(fig, tmp_path / "f.pdf")
    plt.close(fig)
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    for f in tmp_path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_failed_write_leaves_nothing(tmp_path):
    io.write_text(tmp_path / "keep.txt", "old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        io.atomic_write(tmp_path / "keep.txt", boom)
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_fault_before_rename_keeps_the_old_file(tmp_path):
    """A hard exit between the temp write and the rename: the target keeps its old bytes."""
    target = tmp_path / "out.txt"
    io.write_text(target, "old")
    code = f"from valueprobe_jax import io; io.write_text({str(target)!r}, 'new')"
    env = dict(os.environ, **{io.FAULT_ENV: "before_rename"})
    proc = subprocess.run([sys.executable, "-c", code], env=env)
    assert proc.returncode == io.FAULT_EXIT_CODE
    assert target.read_text() == "old"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert target.read_text() == "new"


def test_atomic_dir_removes_only_what_killed_writers_left(tmp_path):
    """A killed writer's temporary sibling (this host, process gone) is removed by the next
    writer; a live writer's, another host's and a foreign name are kept."""
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid, host = int(dead.stdout), socket.gethostname()
    names = {"dead": f".d.pid{dead_pid}@{host}.abc123_x.tmp",
             "live": f".d.pid{os.getpid()}@{host}.abc123_y.tmp",
             "other_host": f".d.pid{dead_pid}@not-{host}.abc123_z.tmp",
             "other_target": f".dd.pid{dead_pid}@{host}.abc123_w.tmp",
             "unnamed": ".d.q1w2e3r4.tmp"}
    for n in names.values():
        (tmp_path / n).mkdir()
        (tmp_path / n / "part").write_text("x")
    assert io.remove_stale_partials(tmp_path / "d") == [tmp_path / names["dead"]]
    (tmp_path / names["dead"]).mkdir()
    with io.atomic_dir(tmp_path / "d") as d:
        assert d.name.startswith(f".d.pid{os.getpid()}@{host}.") and d.name.endswith(".tmp")
        io.write_text(d / "f", "y")
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted(["d"] + [names[k] for k in ("live", "other_host", "other_target", "unnamed")])
