"""Two real JAX processes on this CPU (4 simulated devices each, gloo collectives): the distributed
runtime starts from the environment, a mesh that fits one host stays on it (hosts split the work
items), a mesh over all 8 devices runs the hosts in lockstep, process 0's flags reach every host,
and the sharded forward pass equals the single-process result in both layouts."""

import functools
import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from helpers import SHARDABLE, random_params
from valueprobe_jax.models import causal_mask, forward

WORKER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from valueprobe_jax.parallel.multihost import agree, initialize_distributed, work_split
    assert initialize_distributed()
    import jax.numpy as jnp
    from valueprobe_jax.parallel import sharding as sh
    from valueprobe_jax.models import forward
    from tests.helpers import SHARDABLE as cfg, random_params
    params = random_params(cfg)
    b, t = 8, 10
    tok = np.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (b, t)), np.int32)
    pos = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy()
    mask = np.tril(np.ones((t, t), bool))[None].repeat(b, 0)
    me = jax.process_index()
    report = {"process": me, "count": jax.process_count(), "devices": jax.device_count(),
              "agree": agree([me == 0, me == 1])}
    for spec in ("data=2,tensor=2", "fsdp=4,tensor=2"):
        mesh = sh.make_mesh(spec)
        ws = work_split(mesh)
        p = sh.shard_params(params, mesh, cfg)
        fn = sh.jit_sharded(lambda p, a, q, m: forward(cfg, p, a, q, m)[0], mesh,
                            in_shardings=(sh.param_shardings(cfg, mesh), *sh.batch_shardings((tok, pos, mask), mesh)),
                            out_shardings=sh.replicated(mesh))
        out = fn(p, *sh.shard_batch((tok, pos, mask), mesh))
        np.save(os.path.join(sys.argv[1], f"{spec}-{me}.npy"), np.asarray(out.addressable_shards[0].data))
        report[spec] = {"split": [ws.index, ws.count, ws.writer, ws.lockstep],
                        "hosts": sorted({d.process_index for d in mesh.devices.flat})}
    print("REPORT " + json.dumps(report), flush=True)
    jax.distributed.shutdown()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes(tmp_path):
    port = _free_port()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = []
    for pid in range(2):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
                   JAX_PLATFORMS="cpu", VALUEPROBE_DISTRIBUTED="1",
                   JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(pid), PYTHONPATH=repo)
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    reports = []
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
        reports.append(json.loads(next(l for l in out.splitlines() if l.startswith("REPORT "))[7:]))
    for r in reports:
        assert (r["count"], r["devices"]) == (2, 8)
        assert r["agree"] == [True, False]  # process 0's flags on both hosts
        me = r["process"]
        assert r["data=2,tensor=2"] == {"split": [me, 2, True, False], "hosts": [me]}
        assert r["fsdp=4,tensor=2"] == {"split": [0, 1, me == 0, True], "hosts": [0, 1]}

    cfg = SHARDABLE
    params = random_params(cfg)
    tok = np.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (8, 10)), np.int32)
    pos = np.broadcast_to(np.arange(10, dtype=np.int32), (8, 10))
    ref, _ = jax.jit(functools.partial(forward, cfg))(params, tok, pos, causal_mask(jnp.ones((8, 10), bool)))
    for spec in ("data=2,tensor=2", "fsdp=4,tensor=2"):
        for me in range(2):
            got = np.load(tmp_path / f"{spec}-{me}.npy")
            assert np.max(np.abs(got - np.asarray(ref))) <= 1e-5, (spec, me)


def test_hosts_take_process_zeros_date(monkeypatch):
    """On a pod every host renders process 0's date (a first start may straddle midnight);
    on one host the date is left as it is."""
    from jax.experimental import multihost_utils

    from valueprobe_jax.parallel.multihost import same_date

    assert same_date("2026-12-07") == "2026-12-07"
    sent = []
    monkeypatch.setattr(jax, "process_count", lambda: 4)
    monkeypatch.setattr(multihost_utils, "broadcast_one_to_all",
                        lambda x: sent.append(int(x)) or np.int32(20261206))
    assert same_date("2026-12-07") == "2026-12-06" and sent == [20261207]
    monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", lambda x: x)
    assert same_date("1999-01-02") == "1999-01-02"
