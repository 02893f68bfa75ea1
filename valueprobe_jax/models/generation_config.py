"""A checkpoint's decoding defaults (generation_config.json), as transformers 4.45 reads them.

The paper's released code calls ``generate(do_sample=True, temperature=1.0, max_new_tokens=64)``
for the text method and a ``pipeline(max_new_tokens=20)`` for ratings; every other setting comes
from ``model.generation_config``: the checkpoint's generation_config.json when it has one, else
transformers 4.45's defaults with the eos id of config.json. ``read_generation_config`` does the
same for an HF checkpoint directory and for one written by ``checkpoints.save_orbax`` (which copies
the source's generation_config.json and records config.json's eos id); a GGUF file has none.

transformers' rules kept here: a key absent from the file takes the class default; a key set to
null switches its processor off (temperature/top_p/repetition_penalty act as 1, top_k as 0); when
the file exists its eos_token_id (int, list or absent) is the whole stop list, config.json's is
not consulted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Any, Mapping

from valueprobe_jax.errors import InputError

GENERATION_CONFIG_FILE = "generation_config.json"

# transformers 4.45.2 GenerationConfig defaults for the fields the paper's procedure uses
HF_DEFAULTS: dict[str, Any] = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
                               "repetition_penalty": 1.0, "max_new_tokens": None}


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings of one checkpoint (transformers 4.45 defaults when it has none).

    top_k 0 = no top-k filter; top_p 1.0 = no nucleus filter; max_new_tokens None = transformers'
    ``max_length=20`` applies unless the caller passes max_new_tokens (the paper always does).
    ``source`` is the file read (None: defaults) and ``raw`` its JSON object, kept for copying;
    neither takes part in ==.
    """

    do_sample: bool = HF_DEFAULTS["do_sample"]
    temperature: float = HF_DEFAULTS["temperature"]
    top_k: int = HF_DEFAULTS["top_k"]
    top_p: float = HF_DEFAULTS["top_p"]
    repetition_penalty: float = HF_DEFAULTS["repetition_penalty"]
    eos_token_ids: tuple[int, ...] = ()
    max_new_tokens: int | None = HF_DEFAULTS["max_new_tokens"]
    source: str | None = dataclasses.field(default=None, compare=False)
    raw: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """One line for logs and reports."""
        where = self.source or "transformers 4.45 defaults"
        return (f"do_sample={self.do_sample} temperature={self.temperature} top_k={self.top_k} "
                f"top_p={self.top_p} repetition_penalty={self.repetition_penalty} "
                f"eos={list(self.eos_token_ids)} max_new_tokens={self.max_new_tokens} ({where})")


def eos_ids(value: Any, where: str) -> tuple[int, ...]:
    """An eos_token_id value (int, list of ints or null) -> a tuple of ids."""
    if value is None:
        return ()
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items):
        raise InputError(f"{where}: eos_token_id must be an int or a list of ints, got {value!r}")
    return tuple(items)


def _number(obj: Mapping[str, Any], key: str, neutral: float, where: str, *,
            integer: bool = False) -> Any:
    if key not in obj:
        return HF_DEFAULTS[key]
    value = obj[key]
    if value is None:
        return neutral
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise InputError(f"{where}: {key} must be a non-negative "
                         f"{'integer' if integer else 'number'}, got {value!r}")
    return int(value) if integer else float(value)


def from_dict(obj: Mapping[str, Any], *, where: str = GENERATION_CONFIG_FILE) -> GenerationConfig:
    """A generation_config.json object -> GenerationConfig (absent keys: transformers defaults;
    eos only from the object itself, as transformers does when the file exists)."""
    if not isinstance(obj, Mapping):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    do_sample = obj.get("do_sample", HF_DEFAULTS["do_sample"])
    if not isinstance(do_sample, bool) and do_sample is not None:
        raise InputError(f"{where}: do_sample must be true or false, got {do_sample!r}")
    max_new = _number(obj, "max_new_tokens", None, where, integer=True)
    return GenerationConfig(
        do_sample=bool(do_sample),
        temperature=_number(obj, "temperature", 1.0, where),
        top_k=_number(obj, "top_k", 0, where, integer=True),
        top_p=_number(obj, "top_p", 1.0, where),
        repetition_penalty=_number(obj, "repetition_penalty", 1.0, where),
        eos_token_ids=eos_ids(obj.get("eos_token_id"), where),
        max_new_tokens=max_new,
        source=where,
        raw=dict(obj))


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: invalid JSON ({e})") from None
    except OSError as e:
        raise InputError(f"{path}: unreadable ({e.strerror})") from None


def read_generation_config(directory: str | os.PathLike,
                           fallback_eos: Any = None) -> GenerationConfig:
    """The generation config of a checkpoint directory, as transformers 4.45 would load it.

    ``directory/generation_config.json`` when present (its eos list only); else the defaults
    with ``fallback_eos`` (config.json's eos_token_id; for an HF directory read here when not
    given)."""
    path = pathlib.Path(directory) / GENERATION_CONFIG_FILE
    if path.is_file():
        obj = _read_json(path)
        if not isinstance(obj, dict):
            raise InputError(f"{path}: expected a JSON object, got {type(obj).__name__}")
        return from_dict(obj, where=str(path))
    config = pathlib.Path(directory) / "config.json"
    if fallback_eos is None and config.is_file():
        obj = _read_json(config)
        fallback_eos = obj.get("eos_token_id") if isinstance(obj, dict) else None
        return GenerationConfig(eos_token_ids=eos_ids(fallback_eos, str(config)))
    return GenerationConfig(eos_token_ids=eos_ids(fallback_eos, str(directory)))


__all__ = ["GENERATION_CONFIG_FILE", "HF_DEFAULTS", "GenerationConfig", "eos_ids", "from_dict",
           "read_generation_config"]
