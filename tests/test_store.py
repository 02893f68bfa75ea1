"""The durable chunk store (experiments/store.py) and io's remote writes: the same API on the local
filesystem and on a fake object store (fsspec's memory filesystem behind epath's s3:// scheme,
with rename refused as a bucket would not give an atomic one); manifest binding, corrupt chunks,
the lock, SIGTERM; then deterministic faults and resume for synthesis and `valueprobe verify`
in subprocesses with a scripted model."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
from etils.epath import gpath

from helpers import FakeObjectStore
from valueprobe_jax import io
from valueprobe_jax.errors import InputError
from valueprobe_jax.experiments import results, store

TESTS = pathlib.Path(__file__).resolve().parent


@pytest.fixture(params=["local", "remote"])
def root(request, tmp_path, monkeypatch):
    """A fresh workdir name on the local filesystem or on the fake object store."""
    if request.param == "local":
        return str(tmp_path / "work")
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "s3", FakeObjectStore())  # noqa: SLF001
    return f"s3://bkt/{tmp_path.name}"


def _rows(keys):
    return results.to_table([{"key": k, "qid": k, "p_token": [0.25, 0.75]} for k in keys])


def test_bind_roundtrip_and_corrupt_chunks(root):
    wd = store.Workdir(root)
    wd.bind({"config": "a", "fingerprint": "f1", "items": 4}, ("fingerprint",))
    wd.bind({"config": "a", "fingerprint": "f1", "items": 4}, ("fingerprint",))
    with pytest.raises(InputError, match=r"holds chunks made with other settings \(fingerprint"):
        wd.bind({"config": "b", "fingerprint": "f2"}, ("fingerprint",))

    js = wd.chunks("generate")
    js.save("Q1", {"qid": "Q1", "n": 1})
    assert js.load("Q1") == {"qid": "Q1", "n": 1}
    assert js.load("nope") is None
    with pytest.warns(store.CorruptChunkWarning, match="not Q2"):
        assert js.load("Q1", lambda c: "not Q2") is None

    shards = wd.chunks("shards", store.PARQUET)
    shards.save("chunk-000000", _rows(["a", "b"]))
    assert shards.load("chunk-000000").column("key").to_pylist() == ["a", "b"]
    path = shards.path("chunk-000000")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a non-atomic copy stopped half way
    with pytest.warns(store.CorruptChunkWarning, match="unreadable"):
        assert shards.load("chunk-000000") is None
    with pytest.warns(UserWarning, match="unreadable result file skipped"), \
            pytest.raises(InputError, match="no readable result"):
        results.read_results(os.fspath(wd.root / "shards"))
    shards.save("chunk-000001", _rows(["c"]))
    with pytest.warns(UserWarning, match="chunk-000000.parquet: unreadable"):
        assert results.read_results(os.fspath(wd.root / "shards")).column("key").to_pylist() == ["c"]
    # nothing but the final objects (no temp files) on either filesystem
    assert sorted(p.name for p in io.find_files(io.as_path(root), "")) == [
        "Q1.json", "chunk-000000.parquet", "chunk-000001.parquet", "manifest.json"]


def test_flipped_bytes_fail_the_page_checksum(tmp_path):
    path = tmp_path / "s.parquet"
    io.write_parquet(path, _rows([f"k{i}" for i in range(50)]))
    data = bytearray(path.read_bytes())
    for i in range(100, 140):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises((pa.ArrowException, OSError)):
        results.read_table_file(path)


def test_remote_write_is_one_object_and_fault_leaves_nothing(monkeypatch):
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "s3", FakeObjectStore())  # noqa: SLF001
    target = f"s3://bkt/one-{os.getpid()}/x.json"
    io.write_json(target, {"a": 1})
    assert json.loads(io.as_path(target).read_text()) == {"a": 1}
    monkeypatch.setenv(io.FAULT_ENV, "before_rename")
    monkeypatch.setattr(os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit):
        io.write_json(f"s3://bkt/one-{os.getpid()}/y.json", {"b": 2})
    assert not io.as_path(f"s3://bkt/one-{os.getpid()}/y.json").exists()
    io.as_path(f"s3://bkt/one-{os.getpid()}").rmtree()


def test_second_runner_refused_stale_lock_taken_over(tmp_path):
    root = str(tmp_path / "w")
    with store.Workdir(root, lock_index=0):
        with pytest.raises(InputError, match=rf"--workdir {root}: in use by pid {os.getpid()} on "
                                             rf"{socket.gethostname()} \(lock "):
            with store.Workdir(root, lock_index=0):
                pass
        with store.Workdir(root, lock_index=1):  # another host of a pod: its own share
            pass
    assert not list(pathlib.Path(root).glob("*lock*"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (pathlib.Path(root) / "lock.p0.json").write_text(
        json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    with pytest.warns(UserWarning, match="stale lock"):
        with store.Workdir(root, lock_index=0):
            assert json.loads((pathlib.Path(root) / "lock.p0.json").read_text())["pid"] == os.getpid()
    (pathlib.Path(root) / "lock.p0.json").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(InputError, match="in use by pid 1 on elsewhere"):
        with store.Workdir(root, lock_index=0):
            pass


def test_remote_workdir_takes_no_lock(root):
    if not io.is_remote(root):
        pytest.skip("local locks are tested above")
    with store.Workdir(root) as wd, store.Workdir(root):
        wd.chunks("c").save("x", [1])
    assert [p.name for p in io.find_files(io.as_path(root), "")] == ["x.json"]


def test_sigterm_sets_a_flag_and_stops_before_the_next_chunk(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with store.Workdir(str(tmp_path)) as wd:
        wd.stop_if_asked(left=3)
        os.kill(os.getpid(), signal.SIGTERM)
        assert wd.stop_requested
        wd.stop_if_asked(left=0)  # nothing left: finish normally
        with pytest.raises(store.Stopped) as e:
            wd.stop_if_asked(left=2)
    assert "resume with: valueprobe run ... (the same arguments, same --workdir" in \
        e.value.hint("valueprobe run")
    assert signal.getsignal(signal.SIGTERM) is before


# ----------------------------------------------------------------- synthesis and verify, faults

SYNTH = textwrap.dedent("""
    import sys
    from valueprobe_jax.experiments import store
    from test_synthesis import ScriptedModel, scripted_replies, synth_config
    from valueprobe_jax.synthesis import pipeline
    model = ScriptedModel(scripted_replies)
    try:
        pipeline.run_synthesis(synth_config("--config.run.batch_questions=1",
                                            "--config.run.batch_verify=1"),
                               sys.argv[1], get_model=lambda n, d: model, log=lambda _: None)
    except store.Stopped as e:
        print(e.hint("valueprobe synthesize"), file=sys.stderr)
        sys.exit(store.STOPPED_EXIT_CODE)
""")

VERIFY = textwrap.dedent("""
    import sys
    from test_synthesis import GOOD, MIXED, ScriptedModel
    from valueprobe_jax.cli import main
    from valueprobe_jax.models import checkpoints
    from valueprobe_jax.synthesis import verify
    replies = {"verify|0": GOOD, "verify|1": MIXED, "verify|2": GOOD}
    checkpoints.load_model = lambda name, dtype: name
    verify.ChatModel = lambda loaded, date_string=None: ScriptedModel(replies.__getitem__)
    sys.exit(main(["verify", "--model", "judge", "--in", sys.argv[1], "--out", sys.argv[2],
                   "--chunk-size", "1", "--data-dir", sys.argv[3]]))
""")


def _py(script, *args, fault=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent)]))
    env.pop(io.FAULT_ENV, None)
    if fault:
        env[io.FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def _files(root: pathlib.Path, skip=("report.json",)):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip and not p.name.startswith(".")}


def test_synthesis_faults_then_resume_equal_uninterrupted(tmp_path):
    ref, work = tmp_path / "ref", tmp_path / "work"
    assert _py(SYNTH, ref).returncode == 0
    r = _py(SYNTH, work, fault="after_chunk:2")  # Q1 and Q2 generated, then a hard exit
    assert r.returncode == io.FAULT_EXIT_CODE, r.stderr
    assert sorted(p.name for p in (work / "generate").iterdir()) == ["Q1.json", "Q2.json"]
    r = _py(SYNTH, work, fault="before_rename")  # dies writing Q3's chunk
    assert r.returncode == io.FAULT_EXIT_CODE, r.stderr
    assert sorted(p.name for p in (work / "generate").glob("*.json")) == ["Q1.json", "Q2.json"]
    r = _py(SYNTH, work, fault="sigterm_at_chunk:1")  # Q3 in hand is finished, then it stops
    assert r.returncode == 143, r.stderr
    assert "stopped by SIGTERM after 1 chunk(s) of this run; 3 left" in r.stderr
    assert (work / "generate" / "Q3.json").exists() and not (work / "verify").exists()
    (work / "generate" / "Q1.json").write_text('{"qid": "Q1", "samp')  # torn: redone
    r = _py(SYNTH, work)
    assert r.returncode == 0, r.stderr
    assert "Q1.json: unreadable" in r.stderr
    assert _files(work) == _files(ref)
    rep, ref_rep = (json.loads((d / "report.json").read_text()) for d in (work, ref))
    for k in ("questions_run", "questions_resumed"):
        rep["generation"].pop(k), ref_rep["generation"].pop(k)
        rep["verification"].pop(k), ref_rep["verification"].pop(k)
    assert rep == ref_rep


def test_verify_faults_then_resume_equal_uninterrupted(tmp_path, data_dir):
    from test_synthesis import released_rows, write_rows

    src = tmp_path / "in.jsonl"
    write_rows(src, released_rows(data_dir)[:3])
    ref, out = tmp_path / "ref.jsonl", tmp_path / "out.jsonl"
    assert _py(VERIFY, src, ref, data_dir).returncode == 0
    parts = tmp_path / "out.jsonl.parts"
    r = _py(VERIFY, src, out, data_dir, fault="after_chunk:1")
    assert r.returncode == io.FAULT_EXIT_CODE, r.stderr
    assert sorted(p.name for p in parts.glob("chunk-*")) == ["chunk-000000.json"]
    r = _py(VERIFY, src, out, data_dir, fault="sigterm_at_chunk:1")
    assert r.returncode == 143 and "resume with: valueprobe verify" in r.stderr, r.stderr
    assert sorted(p.name for p in parts.glob("chunk-*")) == ["chunk-000000.json",
                                                             "chunk-000001.json"]
    (parts / "chunk-000000.json").write_text('["one", "two"]\n')  # wrong length: redone
    r = _py(VERIFY, src, out, data_dir)
    assert r.returncode == 0, r.stderr
    assert "chunk-000000.json: is not a list of 1 verdict strings" in r.stderr
    assert out.read_bytes() == ref.read_bytes() and not parts.exists()
