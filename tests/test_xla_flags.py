"""`xla_flags`: the CPU defaults the CLI puts in $XLA_FLAGS before JAX starts. A user's value wins,
nothing changes once the backend runs, and the scheduler default changes the program's schedule
but no sample or log-probability."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from valueprobe_jax import xla_flags

FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"


@pytest.fixture
def before_start(monkeypatch):
    monkeypatch.setattr(xla_flags, "backend_started", lambda: False)
    monkeypatch.delenv(xla_flags.ENV, raising=False)


def test_defaults_go_in_and_the_users_value_wins(before_start, monkeypatch):
    xla_flags.apply_cpu_defaults()
    assert os.environ["XLA_FLAGS"] == f"--{FLAG}=false"
    monkeypatch.setenv("XLA_FLAGS", f"--xla_cpu_use_thunk_runtime=true --{FLAG}=true")
    xla_flags.apply_cpu_defaults()
    assert os.environ["XLA_FLAGS"] == f"--xla_cpu_use_thunk_runtime=true --{FLAG}=true"


def test_set_flag_override_and_after_start(before_start, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --a=1")
    assert xla_flags.set_flag("xla_force_host_platform_device_count", "32", override=True)
    assert os.environ["XLA_FLAGS"] == "--a=1 --xla_force_host_platform_device_count=32"
    assert xla_flags.set_flag("a_b", "x")  # a prefix of no flag there: added
    assert os.environ["XLA_FLAGS"].split()[-1] == "--a_b=x"
    monkeypatch.setattr(xla_flags, "backend_started", lambda: True)
    assert not xla_flags.set_flag("c", "2", override=True)
    assert "--c=2" not in os.environ["XLA_FLAGS"]


RUN = textwrap.dedent("""
    import hashlib, json, sys
    sys.path.insert(0, "tests")
    from helpers import TINY_CONFIGS, random_params
    from test_decode import ByteTokenizer
    from valueprobe_jax.bench import decode_profile as dp
    from valueprobe_jax.engine import sampler, sampling
    cfg = TINY_CONFIGS["llama-gqa-tied"]
    params = random_params(cfg, seed=3, std=0.3)
    s = sampler.Sampler(cfg, params, ByteTokenizer(), stop_token_ids=list(range(0, 96, 7)),
                        end_of_turn=(), max_batch=8, max_prompts=4)
    texts = ["abc", "hello there", "x", "value probes", "qq"]
    sp = sampling.SamplingParams(temperature=1.0, max_new_tokens=12, num_samples=5, seed=4)
    gens = s.generate(texts, [f"k{i}" for i in range(len(texts))], sp)
    fn, _ = dp.compiled_step(cfg, dp.step_inputs(cfg, params, 8, 4, 16, 11), "stacked")
    print(json.dumps({"gens": [[[g.token_ids, g.logprobs] for g in r] for r in gens],
                      "step_hlo": hashlib.sha256(fn.as_text().encode()).hexdigest()}))
""")


def _run(flags: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
    r = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, env=env,
                       timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1])


def test_scheduler_default_changes_the_schedule_not_the_samples():
    default, ours = _run(f"--{FLAG}=true"), _run(f"--{FLAG}=false")
    assert default["step_hlo"] != ours["step_hlo"]  # the flag reached the compiler
    assert default["gens"] == ours["gens"]  # token ids and float log-probabilities, exactly
    assert sum(len(g[0]) for r in ours["gens"] for g in r) > 25
