"""Memory plan: numbers checked against hand computations for Llama-3.1-8B's public shapes."""

import json
import math

import pytest

from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.parallel.plan import (ACCELERATORS, GiB, candidate_meshes, mesh_replicas,
                                          one_host, plan_memory, suggest_mesh, suggest_run_mesh)

# Llama-3.1-8B (config.json of meta-llama/Llama-3.1-8B): 8,030,261,248 parameters.
LLAMA8B = ModelConfig(family="llama", vocab_size=128256, hidden_size=4096, num_layers=32,
                      num_heads=32, num_kv_heads=8, head_dim=128, intermediate_size=14336)
LLAMA8B_PARAMS = 8_030_261_248
NORM_PARAMS = 2 * 32 * 4096 + 4096  # attn + mlp norm per layer, final norm


def test_single_device_bf16_by_hand():
    p = plan_memory(LLAMA8B, "data=1", batch=4, max_len=512, dtype="bfloat16")
    assert p.num_params == LLAMA8B_PARAMS
    assert p.params_bytes == LLAMA8B_PARAMS * 2
    # KV cache = 2 * L * B * S * kv * hd * bytes, plus the int32 slot positions [B, S].
    assert p.kv_cache_bytes == 2 * 32 * 4 * 512 * 8 * 128 * 2 + 4 * 512 * 4
    e, h, kv, d, m, v, b, t = 4096, 32, 8, 128, 14336, 128256, 4, 512
    act = (b * t * (2 * e + (h + 2 * kv) * d + 3 * m) * 2 + b * h * t * t * 10 + b * t * h * d * 4
           + b * t * t + b * t * v * 4)
    assert p.activation_bytes == act
    assert p.fits(ACCELERATORS[-1])  # ~18 GiB on one 80 GiB H100
    assert p.fallbacks == ()


def test_sharded_by_hand():
    p = plan_memory(LLAMA8B, "data=1,fsdp=4,tensor=2", batch=8, max_len=1024, dtype="bfloat16")
    # Matrices split over fsdp (embed) and tensor (heads/mlp/vocab): /8; norms only over fsdp: /4.
    assert p.params_bytes == (LLAMA8B_PARAMS - NORM_PARAMS) * 2 // 8 + NORM_PARAMS * 2 // 4
    # Cache batch over data*fsdp = 4, kv heads over tensor = 2; positions only over batch.
    assert p.kv_cache_bytes == 2 * 32 * 8 * 1024 * 8 * 128 * 2 // 8 + 8 * 1024 * 4 // 4
    assert p.devices == 8 and not any(p.fits(a) for a in ACCELERATORS)  # no 8-chip accelerator


def test_float32_doubles_params():
    a = plan_memory(LLAMA8B, {"tensor": 4}, batch=1, max_len=64, dtype="bfloat16")
    b = plan_memory(LLAMA8B, {"tensor": 4}, batch=1, max_len=64, dtype="float32")
    assert b.params_bytes == 2 * a.params_bytes


def test_fallback_replicates_and_reports():
    falcon_like = LLAMA8B.replace(num_heads=71, num_kv_heads=1, head_dim=64, hidden_size=4544)
    p = plan_memory(falcon_like, "tensor=2", batch=2, max_len=16, dtype="bfloat16")
    assert any("layers/wq: heads (71) not divisible by tensor=2" in f for f in p.fallbacks)
    wq = 32 * 4544 * 71 * 64 * 2  # replicated: the whole tensor on every device
    p1 = plan_memory(falcon_like, "data=1", batch=2, max_len=16, dtype="bfloat16")
    # Everything else halves; wq/wk/wv/wo and the norms stay whole.
    whole = wq + 2 * (32 * 4544 * 64 * 2) + 32 * 71 * 64 * 4544 * 2 + NORM_PARAMS * 4544 // 4096 * 2
    assert p.params_bytes == whole + (p1.params_bytes - whole) // 2


def test_suggest_mesh_smallest_split_that_fits():
    v4 = next(a for a in ACCELERATORS if a.name == "tpu-v4-8")
    s = suggest_mesh(LLAMA8B, v4, batch=8, max_len=1024, dtype="bfloat16")
    assert s.mesh == {"data": 4, "fsdp": 1, "tensor": 1}  # 16 GiB of weights fit a 32 GiB chip
    seventy = LLAMA8B.replace(hidden_size=8192, num_layers=80, num_heads=64, intermediate_size=28672)
    assert suggest_mesh(seventy, v4, batch=8, max_len=1024, dtype="bfloat16") is None  # 141 GB > 4x32 GiB*0.9
    v5e = next(a for a in ACCELERATORS if a.name == "tpu-v5e-16")
    s = suggest_mesh(seventy, v5e, batch=8, max_len=1024, dtype="bfloat16")
    assert s is not None and s.mesh["fsdp"] * s.mesh["tensor"] == 16
    assert s.total_bytes <= 16 * GiB * 0.9


def test_run_mesh_one_host_else_all_chips():
    """`plan --compile`'s default: the memory plan's mesh for one host's chips, one replica per
    host; a model no host holds spans every chip; only meshes `valueprobe run` can run."""
    acc = {a.short: a for a in ACCELERATORS}
    seventy = LLAMA8B.replace(hidden_size=8192, num_layers=80, num_heads=64, intermediate_size=28672)
    plan, replicas = suggest_run_mesh(LLAMA8B, acc["v5p-64"], batch=8, max_len=1024, dtype="bfloat16")
    # 16 GB of weights fit a 95 GiB chip: data=4 on each of the 8 hosts, not data=8,tensor=4
    assert (plan.mesh, replicas) == ({"data": 4, "fsdp": 1, "tensor": 1}, 8)
    assert suggest_mesh(LLAMA8B, acc["v5p-64"], batch=8, max_len=1024,
                        dtype="bfloat16").mesh == {"data": 8, "fsdp": 1, "tensor": 4}
    assert one_host(acc["v5e-16"]).chips == 4
    plan, replicas = suggest_run_mesh(LLAMA8B, acc["h100"], batch=8, max_len=1024, dtype="bfloat16")
    assert (plan.mesh, replicas) == ({"data": 1, "fsdp": 1, "tensor": 1}, 1)
    # 141 GB of weights: more than one v5e host (4 x 16 GiB), so all 16 chips in lockstep
    plan, replicas = suggest_run_mesh(seventy, acc["v5e-16"], batch=8, max_len=1024, dtype="bfloat16")
    assert replicas == 1 and plan.mesh["data"] == 1 and plan.devices == 16
    assert plan.mesh == suggest_mesh(seventy, acc["v5e-16"], batch=8, max_len=1024,
                                     dtype="bfloat16").mesh
    assert suggest_run_mesh(seventy, acc["h100"], batch=8, max_len=1024, dtype="bfloat16") is None
    assert [mesh_replicas(acc["v5p-64"], n) for n in (4, 32)] == [8, 1]
    assert mesh_replicas(acc["v4-8"], 4) == 1
    for a, n in ((acc["v4-8"], 2), (acc["v5e-16"], 8), (acc["h100"], 2)):
        with pytest.raises(InputError, match=f"{n} devices: `valueprobe run` on {a.name} takes"):
            mesh_replicas(a, n)


def test_candidate_meshes_cover_factorisations():
    ms = candidate_meshes(8)
    assert all(math.prod(m.values()) == 8 for m in ms)
    assert len({tuple(m.values()) for m in ms}) == len(ms) == 10  # ordered triples with product 8


def test_bad_inputs():
    with pytest.raises(InputError, match="mesh 'data=2,vocab=4': unknown axis 'vocab'"):
        plan_memory(LLAMA8B, "data=2,vocab=4", batch=1, max_len=8)
    with pytest.raises(InputError, match="--dtype"):
        plan_memory(LLAMA8B, "data=1", batch=1, max_len=8, dtype="float12")


def test_cli_every_registry_model(capsys):
    registry = pytest.importorskip("valueprobe_jax.models.registry")
    from valueprobe_jax.cli import main

    assert main(["plan", "--model", "all", "--mesh", "data=1,fsdp=4,tensor=2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = [m["model"] for m in out["models"]]
    assert names == [s.name for s in registry.list_specs()]
    by = {m["model"]: m for m in out["models"]}
    if "llama-3.1-8b" in by:
        assert by["llama-3.1-8b"]["mesh_plan"]["num_params"] == LLAMA8B_PARAMS
    if "llama-3.1-70b" in by:  # 70B in bf16 (141 GB) does not fit one H100 nor a v4-8
        assert by["llama-3.1-70b"]["suggested"]["h100-80gb"] is None
        assert by["llama-3.1-70b"]["suggested"]["tpu-v4-8"] is None
    assert main(["plan", "--model", "nope"]) == 2
    assert "model 'nope': unknown name" in capsys.readouterr().err
