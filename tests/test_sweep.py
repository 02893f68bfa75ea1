"""Sweeps: config loading and overrides, work-item expansion, atomic shards, and exact resumption
after deterministic faults (hard exit after chunk k, hard exit between temp file and rename,
SIGTERM, torn and corrupt shards, a second runner); a tiny random Llama with the SmolLM2 tokenizer
keeps the subprocesses fast."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from helpers import randomize_torch
from valueprobe_jax import io
from valueprobe_jax.experiments import results, store, sweep
from valueprobe_jax.experiments.config_loading import apply_override, load_config, split_config_overrides
from valueprobe_jax.errors import InputError

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_overrides_are_typed_and_checked():
    c = load_config(str(REPO / "configs/robustness.py") + ":smollm2-135m-instruct",
                    ["--config.max_questions=20", "--config.probe.styles=default,prefixed",
                     "--config.actions.templates=0", "--config.probe.temperature=0.5"])
    assert c.max_questions == 20
    assert list(c.probe.styles) == ["default", "prefixed"]
    assert list(c.actions.templates) == [0]
    assert c.probe.temperature == 0.5
    with pytest.raises(InputError, match=r"unknown config field 'max_question' \(known: "):
        apply_override(c, "max_question=3")
    with pytest.raises(InputError, match="max_questions=abc"):
        apply_override(c, "max_questions=abc")
    with pytest.raises(InputError, match="no such config file 'nope.py'"):
        load_config("nope.py:x")
    assert split_config_overrides(["run", "--config.a", "1", "--workdir", "w", "--config.b=2"]) == (
        ["run", "--workdir", "w"], ["--config.a=1", "--config.b=2"])


def test_runlocal_is_the_same_file_shrunk():
    full = load_config(str(REPO / "configs/robustness.py") + ":qwen2.5-72b-instruct")
    small = load_config(str(REPO / "configs/robustness.py") + ":qwen2.5-72b-instruct,runlocal")
    assert full.probe.styles == small.probe.styles and full.probe.variants == small.probe.variants
    assert (full.max_questions, small.max_questions) == (0, 5)


def test_expansion_counts_and_keys():
    c = load_config(str(REPO / "configs/demographic.py") + ":smollm2-135m-instruct")
    items = sweep.expand_probe_items(c, ["Q1", "Q2", "Q3"])
    assert len(items) == 3 * 5 * 7 * 3  # styles x variants x (6 countries + none) x questions
    assert len({it.key for it in items}) == len(items)
    assert items[0].key == "demographic|smollm2-135m-instruct|default|baseline|-|Q1"
    assert sum(it.country is None for it in items) == 3 * 5 * 3
    chunks = sweep.chunk_items(items, 32)
    assert [len(ch) for ch in chunks] == [32] * 9 + [315 - 288]
    assert [it for ch in chunks for it in ch] == items


def test_shards_are_written_atomically(tmp_path, monkeypatch):
    rows = [{"key": "k1", "qid": "Q1", "p_token": [0.5, 0.5]}]
    path = tmp_path / "shards" / "a.parquet"
    results.write_rows_atomic(rows, path)
    assert pq.read_table(path).column("p_token").to_pylist() == [[0.5, 0.5]]

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(results.pq, "write_table", boom)
    with pytest.raises(OSError):
        results.write_rows_atomic(rows, tmp_path / "shards" / "b.parquet")
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["a.parquet"]


def test_workdir_is_bound_to_its_config(tmp_path):
    spec = str(REPO / "configs/robustness.py") + ":smollm2-135m-instruct"
    c = load_config(spec, ["--config.max_questions=2"])
    sweep.check_manifest(tmp_path, c, 30)
    sweep.check_manifest(tmp_path, c, 30)  # same config: fine
    other = load_config(spec, ["--config.max_questions=3"])
    with pytest.raises(InputError, match=r"holds chunks made with other settings \(fingerprint differs"):
        sweep.check_manifest(tmp_path, other, 45)


# ----------------------------------------------------------------------------- faults and resume

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer random Llama saved by transformers, with the SmolLM2 tokenizer and template."""
    torch = pytest.importorskip("torch")
    import transformers

    from valueprobe_jax.models.checkpoints import load_model

    tok = load_model("smollm2-135m-instruct").tokenizer
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=2048, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    randomize_torch(model, 0, std=0.5)
    path = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _run_cmd(model_dir, workdir):
    return [sys.executable, "-m", "valueprobe_jax.cli", "run",
            "--config", f"{REPO / 'configs/robustness.py'}:{model_dir}", "--workdir", str(workdir),
            "--config.max_questions=3", "--config.probe.variants=baseline,shuffle",
            "--config.probe.samples=3", "--config.probe.max_new_tokens=8",
            "--config.run.chunk_size=3", "--no-progress"]


def _env(fault=None):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one device, like a user's run
    env.pop(io.FAULT_ENV, None)
    if fault:
        env[io.FAULT_ENV] = fault
    return env


def _run(model_dir, workdir, fault=None):
    return subprocess.run(_run_cmd(model_dir, workdir), env=_env(fault), capture_output=True,
                          text=True, timeout=600)


def _shards(workdir):
    return sorted(p.name for p in (workdir / "shards").glob("*.parquet"))


def _rows(workdir):
    table = results.read_results(workdir / "shards")
    rows = sorted(table.to_pylist(), key=lambda r: r["key"])
    return rows


def test_faults_then_resume_give_identical_rows(tiny_model_dir, tmp_path):
    """Each fault fires at a fixed point, so the test cannot pass by the child finishing first:
    hard exit right after chunk 2 is written, hard exit between the temp file and its rename,
    SIGTERM as a chunk starts (that chunk is still finished), a torn and a bit-flipped shard;
    the final resume equals an uninterrupted run row for row."""
    ref_dir, work = tmp_path / "ref", tmp_path / "work"
    ref = _run(tiny_model_dir, ref_dir)
    assert ref.returncode == 0, ref.stderr
    reference = _rows(ref_dir)
    assert len(reference) == 3 * 3 * 2  # questions x styles x variants
    assert len(_shards(ref_dir)) == 6

    killed = _run(tiny_model_dir, work, "after_chunk:2")
    assert killed.returncode == io.FAULT_EXIT_CODE, killed.stderr
    assert _shards(work) == ["chunk-000000.parquet", "chunk-000001.parquet"]

    torn = _run(tiny_model_dir, work, "before_rename")  # dies on its first write
    assert torn.returncode == io.FAULT_EXIT_CODE, torn.stderr
    assert len(_shards(work)) == 2
    assert [p.name for p in (work / "shards").glob(".chunk-000002.parquet.*.tmp")]  # left behind

    stopped = _run(tiny_model_dir, work, "sigterm_at_chunk:1")
    assert stopped.returncode == store.STOPPED_EXIT_CODE == 143, stopped.stderr
    assert len(_shards(work)) == 3  # the chunk in hand was finished and written
    assert "stopped by SIGTERM after 1 chunk(s) of this run; 3 left" in stopped.stderr
    assert f"resume with: valueprobe run ... (the same arguments, same --workdir {work})" \
        in stopped.stderr
    assert not list(work.glob("lock.*"))  # released on the way out

    # a half-copied shard and one with flipped bytes: detected, recomputed, never trusted
    s0, s1 = work / "shards" / "chunk-000000.parquet", work / "shards" / "chunk-000001.parquet"
    s0.write_bytes(s0.read_bytes()[: s0.stat().st_size // 2])
    data = bytearray(s1.read_bytes())
    for i in range(200, 260):
        data[i] ^= 0xFF
    s1.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="unreadable result file skipped"):
        partial = results.read_results(work / "shards")  # the report reads around them
    assert partial.num_rows == 3 * 1

    done = _run(tiny_model_dir, work)
    assert done.returncode == 0, done.stderr
    assert "1 already done" in done.stdout
    assert "chunk-000000.parquet: unreadable" in done.stderr
    assert "chunk-000001.parquet: unreadable" in done.stderr
    resumed = _rows(work)
    assert [r["key"] for r in resumed] == [r["key"] for r in reference]  # none lost, none twice
    assert resumed == reference
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["items"] == 18

    # a shard with the wrong rows (another chunk's) is not trusted either
    (work / "shards" / "chunk-000005.parquet").write_bytes(s0.read_bytes())
    again = _run(tiny_model_dir, work)
    assert again.returncode == 0 and "5 already done" in again.stdout, again.stderr
    assert "keys are not the chunk's" in again.stderr
    assert _rows(work) == reference


def test_second_runner_is_refused(tiny_model_dir, tmp_path):
    """A live holder (this test process) keeps the workdir: the second runner gets one line
    naming the workdir and the holder, before any model is loaded; a dead holder's lock is
    taken over."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "lock.p0.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    second = _run(tiny_model_dir, work)
    assert second.returncode == 2
    assert (f"valueprobe run: error: --workdir {work}: in use by pid {os.getpid()} on "
            f"{socket.gethostname()}") in second.stderr
    assert "Traceback" not in second.stderr and not (work / "shards").exists()
