"""`plan --compile`: the real scoring core compiled for Llama-3.1-8B's registry shape on 8 simulated
devices (conftest), checked against the analytic FLOP model and the memory plan."""

import jax
import pytest

from valueprobe_jax.bench import compile_plan as cp
from valueprobe_jax.engine.flops import flops_estimate
from valueprobe_jax.errors import InputError
from valueprobe_jax.models import registry
from valueprobe_jax.parallel.plan import ACCELERATORS, get_accelerator, plan_memory
from valueprobe_jax.parallel.sharding import make_mesh

MESH = "fsdp=4,tensor=2"
B, T, M = 8, 1024, 64


@pytest.fixture(scope="module")
def llama8b():
    return registry.get_spec("llama-3.1-8b").config.replace(dtype="bfloat16")


def test_score_core_flops_and_memory(llama8b):
    if jax.device_count() < 8:
        pytest.skip("needs the 8 simulated devices of conftest")
    mesh = make_mesh(MESH, devices=jax.devices()[:8])
    c = cp.score_cost(llama8b, mesh, B, T, M)
    # per-device FLOPs x 8 devices vs the engine's analytic count of one call (within 5%)
    assert c.flops * 8 == pytest.approx(flops_estimate(llama8b, B, T, T, M), rel=0.05)
    plan = plan_memory(llama8b, MESH, batch=B, max_len=T)
    # arguments: the parameter shard of the memory plan plus the int32 row arrays (within 1%)
    assert c.memory["argument"] == pytest.approx(plan.params_bytes, rel=0.01)
    # temp (float32 compile, see compile_plan._memory) vs the plan's float32 activation estimate,
    # which also counts full-vocab logits at every position: within [0.5, 1.25] of it
    act = plan_memory(llama8b, MESH, batch=B, max_len=T, dtype="float32").activation_bytes
    assert 0.5 * act <= c.memory["temp"] <= 1.25 * act
    v5p = get_accelerator("v5p-64")
    assert sum(c.memory.values()) < v5p.usable_bytes
    assert c.seconds(v5p) == max(c.flops / 459e12, c.bytes / 2765e9)


def test_bad_accelerator_and_mesh():
    with pytest.raises(InputError) as e:
        get_accelerator("a100")
    assert str(e.value) == "--accelerator 'a100': unknown (choose from v4-8, v5e-16, v5p-64, h100)"
    assert get_accelerator("tpu-v5e-16") is get_accelerator("v5e-16")
    assert {a.short for a in ACCELERATORS} == {"v4-8", "v5e-16", "v5p-64", "h100"}
    with pytest.raises(InputError, match="3 devices do not divide h100-80gb's 1 chips"):
        cp.predict("llama-3.1-8b", get_accelerator("h100"), [], None, mesh="fsdp=3")
