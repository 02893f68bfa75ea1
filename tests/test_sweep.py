"""Sweeps: config loading and overrides, work-item expansion, atomic shards, and exact resumption
after `kill -9` (a tiny random Llama with the SmolLM2 tokenizer keeps the subprocesses fast)."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from helpers import randomize_torch
from valueprobe_jax.experiments import results, sweep
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
    with pytest.raises(InputError, match="holds a sweep of a different config"):
        sweep.check_manifest(tmp_path, other, 45)


# ----------------------------------------------------------------------------- kill -9 and resume

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


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one device, like a user's run
    return env


def _rows(workdir):
    table = results.read_results(workdir / "shards")
    rows = sorted(table.to_pylist(), key=lambda r: r["key"])
    return rows


def test_kill_9_then_resume_gives_identical_rows(tiny_model_dir, tmp_path):
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_run_cmd(tiny_model_dir, ref_dir), check=True, env=_env(), capture_output=True)
    reference = _rows(ref_dir)
    assert len(reference) == 3 * 3 * 2  # questions x styles x variants
    n_chunks = len(list((ref_dir / "shards").glob("*.parquet")))
    assert n_chunks == 6

    proc = subprocess.Popen(_run_cmd(tiny_model_dir, killed_dir), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    shards = killed_dir / "shards"
    while time.time() < deadline and proc.poll() is None:
        if shards.is_dir() and any(shards.glob("*.parquet")):
            break
        time.sleep(0.05)
    time.sleep(random.Random(int(time.time())).uniform(0.0, 0.5))  # a random moment mid-sweep
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(list(shards.glob("*.parquet"))) if shards.is_dir() else 0
    assert partial < n_chunks or proc.returncode == 0  # usually killed mid-way

    done = subprocess.run(_run_cmd(tiny_model_dir, killed_dir), check=True, env=_env(),
                          capture_output=True, text=True)
    assert f"{partial} already done" in done.stdout
    resumed = _rows(killed_dir)
    assert [r["key"] for r in resumed] == [r["key"] for r in reference]  # none lost, none duplicated
    assert resumed == reference
    assert not list(shards.glob(".*"))  # no temporary files left behind
    manifest = json.loads((killed_dir / "manifest.json").read_text())
    assert manifest["items"] == 18
