"""`plan --compile`: the real scoring core compiled for Llama-3.1-8B's registry shape on 8 simulated
devices (conftest), checked against the analytic FLOP model and the memory plan."""

import dataclasses
import json

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
    with pytest.raises(InputError) as e:
        cp.predict("llama-3.1-8b", get_accelerator("h100"), [], None, mesh="fsdp=3")
    assert str(e.value) == ("--mesh data=1,fsdp=3,tensor=1: 3 devices: `valueprobe run` on "
                            "h100-80gb takes a mesh over all its 1 chip")
    # 8 chips of a 4-chip-host slice: neither one host nor the whole slice (make_mesh refuses it)
    with pytest.raises(InputError) as e:
        cp.predict("llama-3.1-8b", get_accelerator("v5p-64"), [], None, mesh=MESH)
    assert str(e.value) == ("--mesh data=1,fsdp=4,tensor=2: 8 devices: `valueprobe run` on "
                            "tpu-v5p-64 takes a mesh over one host's 4 chips or all 32 chips")


def test_model_all_predicts_what_fits_and_names_what_does_not(monkeypatch, capsys):
    """`plan --compile --model all` on one H100: a model no mesh fits is listed, not fatal (the
    programs are faked here; compiling all 20 takes minutes)."""
    from valueprobe_jax.cli import main

    h100 = get_accelerator("h100")
    cost = cp.ProgramCost("score", "8x1024", 2e12, 1e10)
    chunk = cp.ChunkTime(1, 1, 1, 0, {"score": 3600.0})

    def fake_predict(model, acc, work, shapes, **kw):
        cfg = registry.get_spec(model).config
        if cfg.num_params() > 30e9:  # the real check: plan.suggest_mesh finds no mesh
            raise InputError(f"{model}: no mesh of {acc.name} fits it at --batch 8 --max-len 1024")
        return cp.Prediction(model, {"data": 1}, 1, shapes, cp.Programs(cost, cost, cost, None), chunk,
                             {"robustness": chunk})

    monkeypatch.setattr(cp, "predict", fake_predict)
    monkeypatch.setattr(cp, "simulate_devices", lambda n: None)
    work = cp.ExperimentWork("robustness", 32, 0, 1, 32, 10, 64, 1, 20, 137.0, 18.0, 19.0, 107.0,
                             [32], [0])
    monkeypatch.setattr(cp, "sweep_work", lambda *a: [work])
    monkeypatch.setattr(cp, "call_shapes", lambda *a: cp.Shapes(8, 1024, 64, 32, 192, 64, 10, 64,
                                                                 64, 1, 20))
    assert main(["plan", "--compile", "--model", "all", "--accelerator", "h100"]) == 0
    out = capsys.readouterr().out.splitlines()
    big = [s.name for s in registry.list_specs() if s.config.num_params() > 30e9]
    assert big and len(big) < len(registry.list_specs())
    fits = len(registry.list_specs()) - len(big)
    assert f"the {fits} models above: {fits:.2f} h" in out
    assert out[-len(big):] == [f"not predicted: {m}: no mesh of {h100.name} fits it at --batch 8 "
                               f"--max-len 1024" for m in big]

    assert main(["plan", "--compile", "--model", "all", "--accelerator", "h100", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in js["models"]] == [s.name for s in registry.list_specs()
                                                  if s.name not in big]
    assert sorted(js["not_fitting"]) == sorted(big)

    monkeypatch.setattr(cp, "predict", lambda model, *a, **k: fake_predict("qwen2.5-72b", h100, [], None))
    assert main(["plan", "--compile", "--model", "all", "--accelerator", "h100"]) == 2
    assert capsys.readouterr().err.startswith(
        "valueprobe plan: error: --model all: no registry model fits h100-80gb (qwen2.5-72b: ")


def test_decode_rows_per_batch_shard():
    """The plan compiles the decode loop with the Sampler's rows per batch shard (data x fsdp),
    capped by a call's samples, as ``Sampler`` picks them on that mesh."""
    work = [cp.ExperimentWork("robustness", 64, 0, 2, 32, 10, 64, 1, 20, 137.0, 18.0, 19.0, 107.0,
                              [32, 32], [0, 0])]
    rows, prompts = cp.sampler_defaults()
    one = cp.call_shapes(work, 8, 1024)
    assert (one.prompts, one.rows) == (32, min(rows, 32 * 10))
    four = cp.call_shapes(work, 8, 1024, ways=4)
    assert (four.prompts, four.rows) == (32, min(4 * rows, 32 * 10))  # 320: a chunk's samples
    # nothing else differs
    assert dataclasses.replace(four, rows=one.rows, rating_rows=one.rating_rows) == one
