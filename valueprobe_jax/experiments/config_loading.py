"""Load an ml-collections config file as ``path.py:arg`` and apply ``--config.a.b=value`` overrides.

Mirrors big_vision's convention: each config file defines ``get_config(arg)`` returning one
ConfigDict organised in sections. Overrides are type-checked against the existing field, so a
typo or a wrong type is one clear error instead of a silently ignored setting.

``--config.procedure=NAME`` is the one override applied *before* the file: it is handed to
``get_config`` as the argument's procedure flag (``:MODEL,NAME``), so the procedure supplies
defaults under the config file and under every other override (experiments/schema.py).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import pathlib
from typing import Any, Sequence

import ml_collections

from valueprobe_jax.errors import InputError
from valueprobe_jax.vocabulary import PROCEDURE_NAMES, check_choice
from valueprobe_jax.experiments.schema import with_procedure


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """``spec`` = "configs/robustness.py:smollm2-135m-instruct" (the ``:arg`` part is optional)."""
    path_str, _, arg = spec.partition(":")
    path = pathlib.Path(path_str)
    if path.suffix != ".py" or not path.is_file():
        raise InputError(f"--config {spec}: no such config file {path_str!r} (expected FILE.py[:ARG])")
    module_spec = importlib.util.spec_from_file_location(f"_valueprobe_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except InputError as e:
        raise InputError(f"--config {spec}: {e}") from None
    if not hasattr(module, "get_config"):
        raise InputError(f"--config {spec}: {path_str} defines no get_config(arg)")
    overrides, procedure = _take_procedure(overrides)
    if procedure is not None:

        default = inspect.signature(module.get_config).parameters.get("arg")
        default_model = default.default if default is not None and isinstance(default.default, str) else ""
        arg = with_procedure(arg or default_model.split(",")[0], procedure)
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except InputError as e:
        if procedure is not None:
            raise InputError(f"--config.procedure={procedure}: {path_str} has no procedure "
                             f"switch ({e})") from None
        raise InputError(f"--config {spec}: {e}") from None
    config = ml_collections.ConfigDict(config)
    if procedure is not None and config.get("procedure") != procedure:
        raise InputError(f"--config.procedure={procedure}: {path_str} has no procedure switch")
    config.unlock()
    config.config_spec = spec
    config.lock()
    for item in overrides:
        apply_override(config, item)
    return config


def _take_procedure(overrides: Sequence[str]) -> tuple[list[str], str | None]:
    """The overrides without ``procedure=NAME`` ones, and the last NAME (validated)."""

    rest, procedure = [], None
    for item in overrides:
        key, sep, raw = item.removeprefix("--config.").removeprefix("config.").partition("=")
        if key == "procedure" and sep:
            check_choice("--config.procedure", raw.strip(), PROCEDURE_NAMES)
            procedure = raw.strip()
        else:
            rest.append(item)
    return rest, procedure


def _parse_value(text: str, current: Any) -> Any:
    if isinstance(current, str) or current is None and not _looks_literal(text):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(current, bool) and isinstance(value, str):
        low = value.lower()
        if low in ("true", "false"):
            value = low == "true"
    if isinstance(current, (list, tuple)):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        value = list(value)
    return value


def _looks_literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
        return True
    except (ValueError, SyntaxError):
        return False


def apply_override(config: ml_collections.ConfigDict, item: str) -> None:
    """Apply one ``a.b=value`` override (the leading ``--config.`` already stripped or not)."""
    item = item.removeprefix("--config.").removeprefix("config.")
    key, sep, raw = item.partition("=")
    if not sep:
        raise InputError(f"--config.{item}: expected --config.FIELD=VALUE")
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
        if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
            raise InputError(f"--config.{key}: no config section {p!r}")
        node = node[p]
    if leaf not in node:
        raise InputError(f"--config.{key}: unknown config field {leaf!r} "
                         f"(known: {', '.join(sorted(node.keys()))})")
    current = node[leaf]
    value = _parse_value(raw, current)
    if isinstance(current, tuple):
        value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    try:
        with node.unlocked():
            node[leaf] = value
    except TypeError as e:
        raise InputError(f"--config.{key}={raw}: {e}") from None


def config_fingerprint(config: ml_collections.ConfigDict, fields: Sequence[str],
                       exclude: Sequence[str] = ()) -> str:
    """Stable hash of the parts of a config that define a sweep's work items; ``exclude``: dotted
    fields left out (e.g. "probe.date_string", which the manifest records instead)."""
    d = config.to_dict()
    for dotted in exclude:
        *parents, leaf = dotted.split(".")
        node = d
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    picked = {f: d.get(f) for f in fields}
    blob = json.dumps(picked, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_config_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--config.x=y`` (or ``--config.x y``) overrides from the other arguments."""
    rest, overrides = [], []
    argv = list(argv)
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            if "=" in a:
                overrides.append(a)
            elif i + 1 < len(argv):
                overrides.append(f"{a}={argv[i + 1]}")
                i += 1
            else:
                raise InputError(f"{a}: missing value")
        else:
            rest.append(a)
        i += 1
    return rest, overrides
