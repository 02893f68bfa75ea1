"""Peak memory of checkpoint conversion on a synthetic multi-GB checkpoint (a benchmark, not a test).

    python -m valueprobe_jax.bench.convert_memory --gb 3

Writes a random llama-shaped HF checkpoint (bfloat16, sharded with an index like the hub's) whose
largest stacked parameter (``layers/w_gate``, [layers, hidden, mlp]) is about a quarter of it,
then converts it to bfloat16 orbax in child processes, each of which reports its peak resident
set (the kernel's VmHWM): a child that only imports the modules (the interpreter + JAX
baseline), the streamed ``checkpoints.convert``, and the all-in-memory ``load_model`` +
``save_orbax`` for contrast. Everything is written under a temporary directory and deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

# hidden, heads, kv heads, head dim, mlp, vocab: GQA attention is ~0.6 of the MLP per layer, so
# w_gate (one of three MLP matrices) is ~0.27 of a layer and ~0.25 of the whole checkpoint.
SHAPE = dict(hidden_size=2048, num_attention_heads=16, num_key_value_heads=4, head_dim=128,
             intermediate_size=8192, vocab_size=32000)
SHARD_BYTES = 512 * 2**20
MODULES = ("import jax; from orbax.checkpoint import v1; import valueprobe_jax.models.checkpoints; "
           "jax.devices()")


def hf_config(num_layers: int) -> dict:
    return dict(model_type="llama", num_hidden_layers=num_layers, rms_norm_eps=1e-5,
                rope_theta=500000.0, tie_word_embeddings=False, torch_dtype="bfloat16", **SHAPE)


def tensor_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """HF names -> shapes of a llama checkpoint, in the hub's order."""
    e, m, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    shapes = {"model.embed_tokens.weight": (v, e)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (q, e), p + "self_attn.k_proj.weight": (kv, e),
                       p + "self_attn.v_proj.weight": (kv, e), p + "self_attn.o_proj.weight": (e, q),
                       p + "mlp.gate_proj.weight": (m, e), p + "mlp.up_proj.weight": (m, e),
                       p + "mlp.down_proj.weight": (e, m), p + "input_layernorm.weight": (e,),
                       p + "post_attention_layernorm.weight": (e,)})
    shapes.update({"model.norm.weight": (e,), "lm_head.weight": (v, e)})
    return shapes


def layers_for(gb: float) -> int:
    per_layer = sum(int(np.prod(s)) for k, s in tensor_shapes(hf_config(1)).items()
                    if ".layers.0." in k) * 2
    fixed = sum(int(np.prod(s)) for s in tensor_shapes(hf_config(0)).values()) * 2
    return max(2, round((gb * 1e9 - fixed) / per_layer))


def write_checkpoint(directory: pathlib.Path, num_layers: int, seed: int = 0) -> int:
    """Random bfloat16 weights in ~512 MiB shards plus model.safetensors.index.json (one shard in
    memory at a time); returns the bytes of tensor data."""
    import ml_dtypes
    from safetensors.numpy import save_file

    c = hf_config(num_layers)
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(c))
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in tensor_shapes(c).items():
        nbytes = int(np.prod(shape)) * 2
        if groups[-1] and size + nbytes > SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    rng = np.random.default_rng(seed)
    total, weight_map = 0, {}
    for j, group in enumerate(groups):
        fname = f"model-{j + 1:05d}-of-{len(groups):05d}.safetensors"
        part = {name: (rng.standard_normal(shape, np.float32)
                       * (1.0 if name.endswith("norm.weight") else 0.02)).astype(ml_dtypes.bfloat16)
                for name, shape in group}
        save_file(part, str(directory / fname))
        weight_map.update(dict.fromkeys(part, fname))
        total += sum(a.nbytes for a in part.values())
        del part
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


def _peak_rss() -> int:
    """This process's peak resident set in bytes (VmHWM: of this program only, not inherited
    from the parent across fork + exec as ``ru_maxrss`` is)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _child(mode: str, src: str, out: str) -> None:
    if mode == "imports":
        exec(MODULES)  # noqa: S102 (a fixed string of imports)
    else:
        from valueprobe_jax.models import checkpoints

        if mode == "stream":
            checkpoints.convert(src, out, dtype="bfloat16")
        else:
            loaded = checkpoints.load_model(src, dtype="bfloat16")
            checkpoints.save_orbax(out, loaded.cfg, loaded.params)
        assert checkpoints.read_orbax_config(out).dtype == "bfloat16"
    print(json.dumps({"peak_rss": _peak_rss()}))


def run_child(mode: str, src: pathlib.Path, out: pathlib.Path) -> tuple[int, float]:
    """One child Python; (its peak resident set in bytes, wall seconds)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "valueprobe_jax.bench.convert_memory", "--child",
                        mode, str(src), str(out)], env=env, stdout=subprocess.PIPE, text=True)
    if r.returncode:
        raise SystemExit(f"{mode} child failed with exit code {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_rss"], time.perf_counter() - t0


def _du(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=3.0, help="checkpoint size in GB (default 3)")
    ap.add_argument("--tmp", default=None, help="where to write (default: the system temp dir)")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0

    mib = 2**20
    root = pathlib.Path(tempfile.mkdtemp(prefix="convert_memory.", dir=args.tmp))
    try:
        layers = layers_for(args.gb)
        src = root / "hf"
        t0 = time.perf_counter()
        total = write_checkpoint(src, layers)
        shards = len(list(src.glob("*.safetensors")))
        e, m = SHAPE["hidden_size"], SHAPE["intermediate_size"]
        largest = layers * e * m * 2
        print(f"synthetic llama checkpoint: {layers} layers, hidden {e}, mlp {m}, vocab "
              f"{SHAPE['vocab_size']}, bfloat16, {shards} shards, written in "
              f"{time.perf_counter() - t0:.0f} s")
        print(f"checkpoint bytes:         {total:>14,} ({total / mib:,.0f} MiB)")
        print(f"largest stacked tensor:   {largest:>14,} ({largest / mib:,.0f} MiB, layers/w_gate, "
              f"{largest / total:.2f} of the checkpoint)")
        base, _ = run_child("imports", src, root / "none")
        print(f"baseline RSS (interpreter + JAX + orbax imports): {base / mib:,.0f} MiB")
        for mode, label in (("stream", "streamed convert"), ("memory", "in-memory load + save")):
            out = root / f"out-{mode}"
            peak, secs = run_child(mode, src, out)
            print(f"{label + ':':<24} peak RSS {peak / mib:>7,.0f} MiB = {peak / largest:.2f}x the "
                  f"largest stacked tensor ({(peak - base) / largest:.2f}x above the baseline); "
                  f"{secs:.0f} s, {_du(out) / mib:,.0f} MiB written")
            shutil.rmtree(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
