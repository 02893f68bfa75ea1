"""Self-critic verification: the paper's verification prompt (Q1-Q4, Yes/No, asked for as JSON;
data/action_agreement/verification.txt, used text for text) put to a judge model greedily for
every scene row; its raw reply is stored as the row's Verification and readers keep rows with four
Yes (`data.scenarios.load_scenarios`).

``verify_file`` is the resumable runner behind `valueprobe verify`: the rows of a JSON Lines file
in fixed chunks on the durable store (``experiments/store.py``) in OUT.parts/ (manifest bound to
the input's hash and the judge settings, each chunk checked on resume, a lock, SIGTERM ends after
the chunk in hand), then OUT in the released file's format.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Iterable, Sequence

from valueprobe_jax import io
from valueprobe_jax.data import sources
from valueprobe_jax.data.scenarios import VERDICT_KEYS, parse_value, verdict_status
from valueprobe_jax.errors import InputError
from valueprobe_jax.experiments import store, sweep
from valueprobe_jax.synthesis.chat import ChatModel
from valueprobe_jax.synthesis.prompt import value_line
from valueprobe_jax.models import checkpoints
from valueprobe_jax.engine.sampling import SamplingParams

VERIFICATION_FILE = "action_agreement/verification.txt"


def verification_instruction(data_dir: str | os.PathLike | None = None, *,
                             download: bool = True) -> str:
    """The paper's verification prompt (data/action_agreement/verification.txt), verbatim."""
    path = sources.source_file(VERIFICATION_FILE, data_dir, download=download)
    return path.read_text(encoding="utf-8").rstrip("\n")


def verification_messages(instruction: str, value: str, situation: str, action_a: str,
                          action_b: str) -> list[dict[str, str]]:
    """The judge's conversation: the paper's instruction as the system turn (merged into the user
    turn for templates without a system role) and the sample in the layout the instruction
    describes ("Value: ...\\nSituation: ...\\nActionA: ...\\nActionB: ...")."""
    parsed = parse_value(value)
    if parsed is None:
        raise InputError(f"Value {value[:60]!r}: lacks the 'Person A:' / 'Person B:' lines")
    line = value_line(*parsed)
    user = f"Value: {line}\nSituation: {situation}\nActionA: {action_a}\nActionB: {action_b}"
    return [{"role": "system", "content": instruction}, {"role": "user", "content": user}]


def read_scene_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file with Value, Situation, ActionA, ActionB (Section and
    Verification optional); raises InputError naming the first bad line."""
    rows = []
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {n} is not JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{path}: line {n} is not a JSON object")
            missing = [k for k in ("Value", "Situation", "ActionA", "ActionB")
                       if not isinstance(rec.get(k), str)]
            if missing:
                raise InputError(f"{path}: line {n} lacks text field(s) {', '.join(missing)}")
            if parse_value(rec["Value"]) is None:
                raise InputError(f"{path}: line {n}: Value lacks 'Person A:' / 'Person B:' lines")
            rows.append(rec)
    return rows


@dataclasses.dataclass(frozen=True)
class VerifySettings:
    max_new_tokens: int = 48
    batch: int = 8


def verify_rows(judge: ChatModel, instruction: str, rows: Sequence[dict[str, Any]],
                settings: VerifySettings, *, keys: Sequence[str] | None = None) -> list[str]:
    """The judge's greedy reply to the verification prompt for every row (same order)."""

    if not rows:
        return []
    texts = [judge.render(verification_messages(instruction, r["Value"], r["Situation"],
                                                r["ActionA"], r["ActionB"])) for r in rows]
    keys = list(keys) if keys is not None else [f"verify|{i}" for i in range(len(rows))]
    sp = SamplingParams(temperature=0.0, max_new_tokens=settings.max_new_tokens, num_samples=1)
    gens = judge.generate(texts, keys, sp, max_batch=settings.batch)
    return [g[0].text.strip() for g in gens]


def status_counts(verifications: Iterable[str]) -> dict[str, int]:
    """How many replies are "kept" (four Yes) and how many fail for each reason."""
    return dict(collections.Counter(verdict_status(v, VERDICT_KEYS) for v in verifications))


def _verdict_check(n_rows: int) -> Callable[[Any], str | None]:
    def check(got: Any) -> str | None:
        if not isinstance(got, list) or len(got) != n_rows or not all(isinstance(x, str) for x in got):
            return f"is not a list of {n_rows} verdict strings"
        return None

    return check


def verify_file(inp: str | os.PathLike, out: str | os.PathLike, *, model: str,
                dtype: str = "float32", max_new_tokens: int = 48, batch: int = 8,
                chunk_size: int = 32, limit: int = 0, data_dir: str | None = None,
                log: Callable[[str], None] = print) -> dict[str, int]:
    """Judge every row of ``inp`` (the first ``limit``; 0 = all) and write them with their
    Verification to ``out``; resumable through OUT.parts/. Returns the status counts."""
    for name, value in (("--max-new-tokens", max_new_tokens), ("--batch", batch),
                        ("--chunk-size", chunk_size)):
        if value < 1:
            raise InputError(f"{name}={value}: must be >= 1")
    if limit < 0:
        raise InputError(f"--limit={limit}: must be >= 0 (0 = all)")
    if os.fspath(io.as_path(inp)) == os.fspath(io.as_path(out)) or (
            not io.is_remote(inp) and not io.is_remote(out)
            and os.path.realpath(inp) == os.path.realpath(out)):
        raise InputError(f"--out {out}: must differ from --in")
    rows = read_scene_rows(inp)
    if limit:
        rows = rows[:limit]
    instruction = verification_instruction(data_dir)
    out_path = io.as_path(out)
    parts = out_path.parent / (out_path.name + ".parts")
    manifest = {"in_sha256": hashlib.sha256(io.as_path(inp).read_bytes()).hexdigest(),
                "rows": len(rows), "model": model, "dtype": dtype,
                "max_new_tokens": max_new_tokens, "chunk_size": chunk_size}
    settings = VerifySettings(max_new_tokens=max_new_tokens, batch=batch)
    judge = None
    replies: list[str] = []
    starts = list(range(0, len(rows), chunk_size))
    with store.Workdir(os.fspath(parts)) as wd:
        date = sweep.first_day(wd)  # the judge's prompts render the run's first day
        wd.bind({**manifest, "date_string": date}, tuple(manifest),
                hints={k: f"delete {parts} to start over" for k in manifest})
        chunks = wd.chunks("")
        for c, start in enumerate(starts):
            part = rows[start:start + chunk_size]
            got = chunks.load(f"chunk-{c:06d}", _verdict_check(len(part)))
            if got is None:
                wd.stop_if_asked(left=len(starts) - c)
                wd.start_chunk()
                if judge is None:

                    judge = ChatModel(checkpoints.load_model(model, dtype=dtype),
                                      date_string=date)
                keys = [f"verify|{start + i}" for i in range(len(part))]
                got = verify_rows(judge, instruction, part, settings, keys=keys)
                chunks.save(f"chunk-{c:06d}", got)
            replies += got
            log(f"verified rows {start + 1}-{start + len(part)} of {len(rows)}")
        io.write_jsonl(out, [{**r, "Verification": v} for r, v in zip(rows, replies)])
    parts.rmtree()
    return status_counts(replies)
