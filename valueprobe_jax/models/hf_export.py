"""A transformers checkpoint directory for a model we load, for the PyTorch peers that read one
(the bench's HF reference, lm-eval's HF backend in ``valueprobe bench`` and ``lmeval.bench``,
tests). An HF directory is used as it is; a GGUF file is dequantized by transformers into a plain
float32 directory once, cached beside its orbax conversion.

Needs torch (the ``[bench]`` / ``[test]`` extras), imported only inside ``build_hf_dir``: no user
command that runs our engine imports it.
"""

from __future__ import annotations

import os
import pathlib

from valueprobe_jax import io
from valueprobe_jax.errors import InputError
from valueprobe_jax.models import checkpoints

PathLike = str | os.PathLike


def hf_checkpoint(name: PathLike) -> pathlib.Path:
    """The GGUF file or HF directory that transformers can load for ``name`` (a path, or a
    registry name resolved as ``load_model`` does)."""
    if os.path.exists(name):
        return pathlib.Path(name)
    return checkpoints.packaged_gguf(str(name)) or checkpoints.resolve(str(name))


def hf_export_dir(gguf: PathLike) -> pathlib.Path:
    """Where ``hf_model_dir`` caches the transformers directory of ``gguf``: beside its orbax
    conversion, under the same key (file identity and converter version)."""
    orbax = checkpoints.gguf_cache_dir(gguf)
    return orbax.with_name(orbax.name + "-hf")


def build_hf_dir(gguf: PathLike, out: PathLike) -> pathlib.Path:
    """Dequantize ``gguf`` (weights and tokenizer) with transformers into a float32 checkpoint
    directory ``out``, unless ``out`` already holds one; returns ``out``. Written atomically, so
    an interrupted build leaves nothing behind."""
    import torch  # noqa: PLC0415 (optional: the bench and test extras)
    import transformers  # noqa: PLC0415

    gguf, out = pathlib.Path(gguf), pathlib.Path(out)
    if (out / "config.json").is_file():
        return out
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                              dtype=torch.float32)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):  # a GGUF marker: the saved weights are plain float32
        del cfg.quantization_config
    plain = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    try:
        with io.atomic_dir(out) as tmp:
            plain.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    except (FileExistsError, OSError):
        if not (out / "config.json").is_file():  # not a concurrent builder that won the race
            raise
    return out


def hf_model_dir(name: PathLike) -> pathlib.Path:
    """A transformers checkpoint directory for ``name``: its HF directory, or its GGUF file
    converted once by ``build_hf_dir`` into ``hf_export_dir``."""
    src = hf_checkpoint(name)
    if src.suffix == ".gguf":
        return build_hf_dir(src, hf_export_dir(src))
    if not (src / "config.json").is_file():
        raise InputError(f"{src}: not a transformers checkpoint (no config.json; a converted "
                         "orbax directory cannot be read by PyTorch): give its HF directory or "
                         "GGUF file")
    return src


__all__ = ["hf_checkpoint", "hf_export_dir", "build_hf_dir", "hf_model_dir"]
