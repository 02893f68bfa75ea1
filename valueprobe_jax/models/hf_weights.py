"""Hugging Face safetensors -> our parameters, one parameter at a time.

Each family module states its weight mapping once, as ``weight_map(cfg)``: one ``Rule`` per
parameter of ours, naming the HF tensor it comes from (``{i}`` in the name stands for the layer of
a stacked parameter), that tensor's shape, and how one such tensor becomes ours (transposes, head
splits). ``iter_params`` checks every name and shape against the checkpoint's headers before it
reads any data, then builds one parameter at a time: a stacked ``[layers, ...]`` array is allocated
in the target dtype and filled layer by layer, so only that parameter and one source tensor are
alive. Collected into a dict it is the in-memory conversion; ``checkpoints.convert`` writes each
parameter as it comes and lets it go (a 70B checkpoint never sits in memory).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Any, Callable, Iterator, Mapping

import ml_dtypes
import numpy as np

from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.layers import param_shapes

PathLike = str | os.PathLike

# safetensors dtype names -> numpy (bfloat16 through ml_dtypes, which numpy lacks)
_DTYPES: dict[str, Any] = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


@dataclasses.dataclass(frozen=True)
class Rule:
    """One parameter of ours from one HF tensor (from one per layer when ``source`` has ``{i}``).

    shape: the HF tensor's shape; to_ours: one HF tensor (one layer) -> our layout.
    """

    param: str
    source: str
    shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def stacked(self) -> bool:
        return "{i}" in self.source


HEAD = "lm_head.weight"


def head_rules(cfg: ModelConfig) -> list[Rule]:
    """The untied LM head ([vocab, hidden] in HF, [hidden, vocab] ours); none when tied."""
    if cfg.tie_embeddings:
        return []
    return [Rule("lm_head", HEAD, (cfg.vocab_size, cfg.hidden_size), np.transpose)]


@dataclasses.dataclass(frozen=True)
class WeightMap:
    """A family's whole mapping: its rules, a name prefix checkpoints may or may not carry, and
    name endings of tensors a checkpoint may hold that the model does not use (RoPE buffers of
    old exports)."""

    family: str
    rules: tuple[Rule, ...]
    optional_prefix: str = ""
    ignore: tuple[str, ...] = ("inv_freq",)


@dataclasses.dataclass(frozen=True)
class _Entry:
    file: str
    dtype: Any
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file


def _read_header(path: pathlib.Path) -> dict[str, _Entry]:
    """The tensors a safetensors file holds, checked against the file's size (nothing else read)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or n > min(size - 8, _MAX_HEADER):
                raise ValueError(f"header length {n} does not fit the file's {size} bytes")
            header = json.loads(fh.read(n))
        entries = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in _DTYPES:
                raise ValueError(f"tensor {name}: unsupported dtype {info['dtype']}")
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
            if begin < 0 or end - begin != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"tensor {name}: data_offsets [{begin}, {end}] do not hold "
                                 f"{info['dtype']} {list(shape)}")
            if 8 + n + end > size:
                raise ValueError(f"tensor {name}: data ends at byte {8 + n + end}, beyond the "
                                 f"file's {size} bytes (truncated?)")
            entries[name] = _Entry(path.name, dtype, shape, 8 + n + begin)
        return entries
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: unreadable safetensors file ({e})") from None


class SafetensorsDir(Mapping[str, np.ndarray]):
    """Lazy name -> numpy tensor view of an HF checkpoint directory (single file or sharded).

    Opening reads only the headers (names, dtypes, shapes, offsets; a truncated file is caught
    here). Each access reads one tensor straight from its file into a fresh array (no memory map
    left open, so nothing stays resident); bfloat16 comes back as ml_dtypes bfloat16.
    """

    def __init__(self, directory: PathLike):
        self.dir = pathlib.Path(directory)
        index = self.dir / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise InputError(f"{index}: not a safetensors index ({e})") from None
            files = sorted(set(weight_map.values()))
            for f in files:
                if not (self.dir / f).is_file():
                    raise InputError(f"{self.dir}: shard {f} listed in "
                                     "model.safetensors.index.json is missing")
        else:
            files = sorted(p.name for p in self.dir.glob("*.safetensors"))
            if not files:
                raise InputError(f"{self.dir}: no *.safetensors weights found")
        self._entries: dict[str, _Entry] = {}
        for f in files:
            self._entries.update(_read_header(self.dir / f))

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name].shape

    def __getitem__(self, name: str) -> np.ndarray:
        e = self._entries[name]
        path = self.dir / e.file
        count = math.prod(e.shape)
        try:
            with open(path, "rb") as fh:
                a = np.fromfile(fh, dtype=e.dtype, count=count, offset=e.offset)
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: tensor {name} unreadable ({err})") from None
        if a.size != count:  # the file shrank after its header was read
            raise InputError(f"{path}: tensor {name} is truncated ({a.size} of {count} values)")
        return a.reshape(e.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _shape(tensors: Mapping[str, Any], name: str) -> tuple[int, ...]:
    if isinstance(tensors, SafetensorsDir):
        return tensors.shape(name)  # from the header: no data read
    return tuple(np.shape(tensors[name]))


def _sources(rule: Rule, num_layers: int) -> list[str]:
    return ([rule.source.format(i=i) for i in range(num_layers)] if rule.stacked
            else [rule.source])


def _check(cfg: ModelConfig, wmap: WeightMap, tensors: Mapping[str, Any]) -> dict[str, str]:
    """Every tensor the rules need, present and of its shape; nothing unexpected left over.
    Returns rule name -> the checkpoint's key (with or without the optional prefix)."""
    keys = {k.removeprefix(wmap.optional_prefix): k for k in tensors}
    fam = wmap.family
    for rule in wmap.rules:
        for name in _sources(rule, cfg.num_layers):
            if name not in keys:
                raise InputError(f"checkpoint: missing tensor {name!r} for a {fam} model")
            got = _shape(tensors, keys[name])
            if got != rule.shape:
                raise InputError(f"checkpoint: tensor shape mismatch for {name}: checkpoint has "
                                 f"{got}, config expects {rule.shape}")
    used = {name for rule in wmap.rules for name in _sources(rule, cfg.num_layers)}
    # a tied model may still store its head: transformers ignores it, and so do we
    ignore = wmap.ignore + ((HEAD,) if cfg.tie_embeddings else ())
    extra = sorted(k for k in keys if k not in used and not k.endswith(ignore))
    if extra:
        shown = ", ".join(extra[:3]) + (f" (+{len(extra) - 3} more)" if len(extra) > 3 else "")
        tied = "tied" if cfg.tie_embeddings else "untied"
        raise InputError(f"checkpoint: unexpected tensor(s) {shown} for this {cfg.num_layers}-layer "
                         f"{tied} {fam} config (does config.json match the weights?)")
    return keys


def _build(rule: Rule, shape: tuple[int, ...], dtype: Any, keys: Mapping[str, str],
           tensors: Mapping[str, Any], num_layers: int) -> np.ndarray:
    """One parameter in ``dtype``: allocated once, filled one source tensor (layer) at a time."""
    out = np.empty(shape, dtype)
    slots = [out[i] for i in range(num_layers)] if rule.stacked else [out[...]]
    for slot, name in zip(slots, _sources(rule, num_layers)):
        piece = np.asarray(tensors[keys[name]])
        if rule.to_ours is not None:
            piece = rule.to_ours(piece)
        if piece.shape != slot.shape:
            raise ValueError(f"{rule.param}: the mapping of {name} gives {piece.shape}, "
                             f"expected {slot.shape}")
        slot[...] = piece  # casts to dtype (bfloat16 via ml_dtypes, round to nearest even)
    return out


def iter_params(cfg: ModelConfig, wmap: WeightMap,
                tensors: Mapping[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
    """(our flat name, array in ``cfg.dtype``) for every parameter, built one at a time.

    Names and shapes are checked (one InputError for the first problem) when this is called,
    before any tensor data is read; the arrays are built as the iterator is consumed."""
    shapes = param_shapes(cfg)
    params = [r.param for r in wmap.rules]
    if sorted(params) != sorted(shapes):
        raise ValueError(f"{wmap.family} weight map gives {sorted(params)}, the config has "
                         f"{sorted(shapes)}")
    keys = _check(cfg, wmap, tensors)

    def build() -> Iterator[tuple[str, np.ndarray]]:
        for rule in wmap.rules:
            yield rule.param, _build(rule, shapes[rule.param], cfg.jnp_dtype, keys, tensors,
                                     cfg.num_layers)
    return build()


def params_from_hf(cfg: ModelConfig, wmap: WeightMap,
                   tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The whole flat parameter dict in memory (small models, tests)."""
    return dict(iter_params(cfg, wmap, tensors))


__all__ = ["Rule", "WeightMap", "SafetensorsDir", "head_rules", "iter_params", "params_from_hf"]
