"""Where the paper's public data files come from: a local mirror directory, or the paper's GitHub
repository at a pinned commit, checked against sha256 sums either way.

A mirror directory has the layout of ``../shared/data``: ``paper_repo/<path under data/>``. The
mirror is found from the ``data_dir`` argument, else the ``VALUEPROBE_DATA_DIR`` environment
variable. Without a mirror, files are downloaded once into ``VALUEPROBE_CACHE`` (default
``~/.cache/valueprobe_jax``); ``VALUEPROBE_OFFLINE=1`` (or ``download=False``) forbids that.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import urllib.request

from valueprobe_jax import io
from valueprobe_jax.errors import InputError

REPO = "shensq/Revisiting-LLM-Value-Probing-Strategies"
COMMIT = "339b4db06d00eb2564b2b1fd3f31ffaa332e7e95"
RAW_URL = f"https://raw.githubusercontent.com/{REPO}/{COMMIT}/data/{{path}}"

# sha256 of each file (path relative to the source's data/ folder), from shared/data/SOURCES.md.
SHA256 = {
    "templates/template0.json": "9e1952ec6700bfd7cf90dd4435be0024fd68ced13dd28fad9db5a752380f9089",
    "templates/template1.json": "62c3a82ac0f4849186007b4407f8ebd431a1285149d8b9ae44082ad5e1d3ce6a",
    "templates/template2.json": "ae529ec4e0f37235c80517b29a92a3a2b894b7a69cba1e2bade22e65ddba6a35",
    "input_dict.json": "66c9c16e6524c44a9e7e053b07a7000a77a199c7b0a0a09f08b03b59ce5a0197",
    "action_agreement/verification.txt":
        "1ef949370cebb52e351d28789aa97a2c9f7a174598153b5a1403b4a67048794d",
    "action_agreement/value_tasks_verified_parsed.json":
        "a66a3b02e526162babab3211b988eabfdfb473301014d4a56621d978e132b904",
}

INPUT_DICT = "input_dict.json"
SCENARIOS = "action_agreement/value_tasks_verified_parsed.json"


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def mirror_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
    """The mirror directory to use (argument, else $VALUEPROBE_DATA_DIR), or None."""
    chosen = data_dir if data_dir is not None else os.environ.get("VALUEPROBE_DATA_DIR")
    if not chosen:
        return None
    path = pathlib.Path(chosen).expanduser()
    if not path.is_dir():
        raise InputError(f"{path}: data directory does not exist")
    return path


def cache_dir() -> pathlib.Path:
    return io.cache_root() / "paper_repo" / COMMIT


def _download(relpath: str, dest: pathlib.Path) -> None:
    url = RAW_URL.format(path=urllib.request.quote(relpath))

    def fetch(out) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=60) as resp:
            while block := resp.read(1 << 20):
                out.write(block)
                digest.update(block)
        if digest.hexdigest() != SHA256[relpath]:
            raise InputError(f"{url}: sha256 {digest.hexdigest()} does not match the pinned "
                             f"{SHA256[relpath]}")

    try:
        io.atomic_write(dest, fetch)
    except OSError as e:
        raise InputError(f"{url}: download failed ({e})") from None


def source_file(relpath: str, data_dir: str | os.PathLike | None = None, *,
                download: bool = True) -> pathlib.Path:
    """Local path of one paper data file (relative to the source's data/ folder), verified."""
    if relpath not in SHA256:
        raise InputError(f"{relpath}: not one of the paper's pinned data files")
    mirror = mirror_dir(data_dir)
    if mirror is not None:
        path = mirror / "paper_repo" / relpath
        if not path.is_file():
            raise InputError(f"{path}: missing from the data directory {mirror}")
    else:
        path = cache_dir() / relpath
        if not path.is_file():
            if not download or os.environ.get("VALUEPROBE_OFFLINE") == "1":
                raise InputError(f"{relpath}: no data directory given (set VALUEPROBE_DATA_DIR) "
                                 "and downloads are off")
            _download(relpath, path)
    got = _sha256(path)
    if got != SHA256[relpath]:
        raise InputError(f"{path}: sha256 {got} does not match the pinned {SHA256[relpath]}")
    return path
