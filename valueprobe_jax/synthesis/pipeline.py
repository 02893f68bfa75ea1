"""Value-action dataset synthesis (the paper's Sec. 5.2 data): scene generation, cleaning and
self-critic verification, resumable per question.

For each value question the two opposite answers (its first and last option) become
"Person A: ..." and "Person B: ...". A generator model writes numbered situations in which PersonX
acts as A or as B would ("Situation_i: / ActionA_i: / ActionB_i:"); the reply is parsed
tolerantly, each scene is checked (complete, not cut off by the token limit, within the word
limits the prompt states, two different actions, not a copy of the prompt's example, not a near
duplicate of a scene already kept) and up to `scenes_per_question` are kept. A judge model then
answers the paper's verification prompt (Q1-Q4, Yes/No, asked for as JSON) for every kept scene,
greedily; its raw reply is stored as the row's Verification, and readers keep rows with four Yes
(`data.scenarios.load_scenarios`). Every scene that is dropped is counted by reason, so the
report's numbers add up: scenes parsed = kept + sum(dropped).

Modules, one job each: ``prompt`` (the generation prompt), ``scenes`` (parsing and selection),
``chat`` (the model), ``verify`` (the judge, and the resumable `valueprobe verify` runner) and
this one, the pipeline over the durable store (``experiments/store.py``): manifest bound to the
generation and verification settings, one chunk per question and stage written once through
``io``, chunks checked on resume, a workdir lock, SIGTERM ends after the batch in hand. The
workdir may be a local path or ``gs://...``.

Workdir layout (each file written once, whole; a rerun skips questions whose chunk checks out):
  manifest.json              the config fingerprints the chunks were made with
  lock.p0.json               held while a run is going (see experiments/store.py)
  generate/<qid>.json        raw samples, every parsed scene with its status, per question
  verify/<qid>.json          the judge's reply for every kept scene of the question
  scenes.jsonl               kept scenes (Value, Situation, ActionA, ActionB, Section)
  scenarios.jsonl            the same rows with Verification: the released file's format
  report.json                counts per stage and per question
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Callable, Sequence

from valueprobe_jax import io
from valueprobe_jax.data.questions import Question
from valueprobe_jax.data.scenarios import verdict_status
from valueprobe_jax.errors import InputError
from valueprobe_jax.experiments import store, sweep
from valueprobe_jax.experiments.config_loading import config_fingerprint
from valueprobe_jax.synthesis.chat import ChatModel
from valueprobe_jax.synthesis.prompt import (EXAMPLE_SCENES, ScenePrompt, generation_messages,
                                             load_scene_prompt, value_field)
from valueprobe_jax.synthesis.scenes import KEPT, Sample, SelectionSettings, select_scenes
from valueprobe_jax.synthesis.verify import VerifySettings, verification_instruction, verify_rows
from valueprobe_jax.models import checkpoints
from valueprobe_jax.engine.sampling import SamplingParams
from valueprobe_jax.data.selection import select_questions

GENERATION_FINGERPRINT = ("input", "model", "generation")
VERIFICATION_FINGERPRINT = ("verification",)
GENERATE, VERIFY = "generate", "verify"


def chunk_name(qid: str) -> str:
    """A chunk name for a question id (ids of user files may hold any characters)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", qid)
    if safe != qid:
        safe += "-" + hashlib.sha1(qid.encode()).hexdigest()[:8]
    return safe


def check_manifest(wd: store.Workdir, config: Any, date_string: str = "") -> None:
    """Bind a workdir to the settings its chunks were made with (not max_questions nor the run
    section: chunks are per question and do not depend on batching), so a rerun with other
    settings cannot mix two datasets; record the date its prompts were rendered with."""
    record = {"config": config.get("config_spec", ""),
              "generation": config_fingerprint(config, GENERATION_FINGERPRINT),
              "verification": config_fingerprint(config, VERIFICATION_FINGERPRINT),
              "date_string": date_string}
    wd.bind(record, ("generation", "verification"),
            hints={"generation": f"use a new --workdir or delete {wd.root / GENERATE} and "
                                 "manifest.json",
                   "verification": f"use a new --workdir or delete {wd.root / VERIFY} and "
                                   "manifest.json"})


def selection_settings(config: Any) -> SelectionSettings:
    g = config.generation
    examples = tuple(s.situation for s in EXAMPLE_SCENES) if g.few_shot else ()
    return SelectionSettings(scenes_per_question=g.scenes_per_question,
                             max_situation_words=g.max_situation_words,
                             max_action_words=g.max_action_words,
                             dedup_threshold=g.dedup_threshold, example_situations=examples)


def scene_prompt_of(config: Any) -> ScenePrompt:
    """The scene-generation instruction of a synthesis config: generation.prompt_file, else the
    data directory's Table 5 text, else the reconstruction (``prompt.load_scene_prompt``)."""
    return load_scene_prompt(config.generation.get("prompt_file", "") or None,
                             config.input.data_dir or None)


def generation_chunk(question: Question, prompt_text: str, samples: Sequence[Sample],
                     settings: SelectionSettings) -> dict[str, Any]:
    """The per-question record of the generation stage."""
    scenes = select_scenes(samples, settings)
    counts = collections.Counter(s["status"] for s in scenes)
    return {
        "qid": question.id, "question": question.question, "value": value_field(question),
        "section": question.section, "prompt": prompt_text,
        "samples": [{"text": s.text, "finish_reason": s.finish_reason} for s in samples],
        "scenes": scenes, "parsed": len(scenes), "kept": counts.pop(KEPT, 0),
        "dropped": dict(sorted(counts.items())),
    }


def scene_rows(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    """The kept scenes of a generation chunk as rows of the released format (no Verification)."""
    return [{"Value": chunk["value"], "Situation": s["situation"], "ActionA": s["action_a"],
             "ActionB": s["action_b"], "Section": chunk["section"]}
            for s in chunk["scenes"] if s["status"] == KEPT]


@dataclasses.dataclass
class StageCounts:
    items: int = 0     # questions in the stage
    run: int = 0       # questions computed in this call
    resumed: int = 0   # questions whose chunk existed already


def _generation_check(qid: str) -> Callable[[Any], str | None]:
    def check(chunk: Any) -> str | None:
        if not isinstance(chunk, dict) or chunk.get("qid") != qid or not all(
                k in chunk for k in ("samples", "scenes", "parsed", "kept", "dropped", "value")):
            return f"is not a generation chunk of question {qid}"
        return None

    return check


def _verify_check(chunk: Any) -> str | None:
    if not isinstance(chunk, dict) or not isinstance(chunk.get("scenes"), str) or not isinstance(
            chunk.get("verifications"), list) or len(chunk.get("status", ())) != len(
            chunk["verifications"]):
        return "is not a verify chunk"
    return None


def load_generation(wd: store.Workdir, qid: str) -> dict[str, Any] | None:
    """A question's generation chunk, or None when missing or corrupt (then it is redone)."""
    return wd.chunks(GENERATE).load(chunk_name(qid), _generation_check(qid))


def run_generation(config: Any, wd: store.Workdir, questions: Sequence[Question],
                   get_model: Callable[[str, str], ChatModel], *, log: Callable[[str], None] = print
                   ) -> StageCounts:
    """Generate, parse and select scenes for every question without a generate/ chunk."""

    g = config.generation
    settings = selection_settings(config)
    chunks = wd.chunks(GENERATE)
    todo = [q for q in questions if load_generation(wd, q.id) is None]
    counts = StageCounts(len(questions), len(todo), len(questions) - len(todo))
    if not todo:
        return counts
    scene_prompt = scene_prompt_of(config)
    log(f"scene prompt: {scene_prompt.source}")
    model = get_model(config.model.name, config.model.dtype)
    sp = SamplingParams(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p,
                        max_new_tokens=g.max_new_tokens, num_samples=g.samples, seed=g.seed)
    prefix = "Situation_1:" if g.prime_format else ""
    batch = max(1, config.run.batch_questions)
    for start in range(0, len(todo), batch):
        wd.stop_if_asked(left=len(todo) - start)
        wd.start_chunk()
        part = todo[start:start + batch]
        texts = [model.render(generation_messages(
            q, n=g.scenes_per_question, min_situation_words=g.min_situation_words,
            max_situation_words=g.max_situation_words, min_action_words=g.min_action_words,
            max_action_words=g.max_action_words, few_shot=g.few_shot, prompt=scene_prompt),
            prefix) for q in part]
        # one sampler width for every batch (the last one is padded), so jit compiles once
        gens = model.generate(texts, [f"synthesis|{q.id}" for q in part], sp,
                              max_batch=g.samples * batch)
        for q, text, samples in zip(part, texts, gens):
            chunk = generation_chunk(q, text, [Sample(prefix + s.text, s.finish_reason)
                                               for s in samples], settings)
            chunks.save(chunk_name(q.id), chunk)
            log(f"generate {q.id}: {len(samples)} samples, {chunk['parsed']} scenes parsed, "
                f"{chunk['kept']} kept")
    return counts


def run_verification(config: Any, wd: store.Workdir, questions: Sequence[Question],
                     get_model: Callable[[str, str], ChatModel], *,
                     log: Callable[[str], None] = print) -> StageCounts:
    """Ask the judge about the kept scenes of every question that has no verify/ chunk, or one
    made for other scenes (its generate/ chunk was made again)."""
    v = config.verification
    chunks = wd.chunks(VERIFY)
    scenes = {q.id: scene_rows(_generated(wd, q.id)) for q in questions}
    todo = [q for q in questions if verify_chunk(wd, q.id, scenes[q.id]) is None]
    counts = StageCounts(len(questions), len(todo), len(questions) - len(todo))
    if not todo:
        return counts
    judge_name = v.model or config.model.name
    settings = VerifySettings(max_new_tokens=v.max_new_tokens,
                              batch=max(1, config.run.batch_verify))
    instruction = verification_instruction(config.input.data_dir or None)
    judge: ChatModel | None = None
    pending: list[tuple[Question, list[dict[str, Any]]]] = []
    flushed = 0

    def flush() -> None:
        nonlocal judge, flushed
        wd.stop_if_asked(left=len(todo) - flushed)
        wd.start_chunk()
        rows = [r for _, rs in pending for r in rs]
        keys = [f"verify|{q.id}|{i}" for q, rs in pending for i in range(len(rs))]
        if rows and judge is None:
            judge = get_model(judge_name, v.dtype or config.model.dtype)
        replies = verify_rows(judge, instruction, rows, settings, keys=keys) if rows else []
        at = 0
        for q, rs in pending:
            mine = replies[at:at + len(rs)]
            at += len(rs)
            chunks.save(chunk_name(q.id), {"qid": q.id, "judge": judge_name,
                                           "scenes": rows_digest(rs), "verifications": mine,
                                           "status": [verdict_status(x) for x in mine]})
            four_yes = sum(verdict_status(x) == "kept" for x in mine)
            log(f"verify {q.id}: {len(mine)} scenes, {four_yes} with four Yes")
        flushed += len(pending)
        pending.clear()

    for q in todo:
        pending.append((q, scenes[q.id]))
        if sum(len(rs) for _, rs in pending) >= settings.batch:
            flush()
    flush()
    return counts


def rows_digest(rows: Sequence[dict[str, Any]]) -> str:
    """A short hash of scene rows: ties a verify chunk to the scenes it judged."""
    blob = json.dumps([[r["Value"], r["Situation"], r["ActionA"], r["ActionB"]] for r in rows])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _generated(wd: store.Workdir, qid: str) -> dict[str, Any]:
    chunk = load_generation(wd, qid)
    if chunk is None:
        raise RuntimeError(f"generation chunk of {qid} is missing after the generation stage")
    return chunk


def verify_chunk(wd: store.Workdir, qid: str,
                 rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The verify chunk of a question if it is sound and judged exactly `rows`, else None (a
    stale chunk, made for scenes that were generated again, is redone without a warning)."""
    chunk = wd.chunks(VERIFY).load(chunk_name(qid), _verify_check)
    if chunk is None or chunk["scenes"] != rows_digest(rows) or len(
            chunk["verifications"]) != len(rows):
        return None
    return chunk


def assemble(config: Any, wd: store.Workdir, questions: Sequence[Question],
             gen_counts: StageCounts, ver_counts: StageCounts | None) -> dict[str, Any]:
    """Write scenes.jsonl, scenarios.jsonl and report.json from the chunks; return the report."""
    per_q: dict[str, Any] = {}
    dropped: collections.Counter = collections.Counter()
    finish: collections.Counter = collections.Counter()
    scenes_out, scenarios_out = [], []
    n_samples = no_scene = parsed = kept = 0
    verdicts: collections.Counter = collections.Counter()
    for q in questions:
        chunk = _generated(wd, q.id)
        rows = scene_rows(chunk)
        scenes_out += rows
        n_samples += len(chunk["samples"])
        finish.update(s["finish_reason"] for s in chunk["samples"])
        no_scene += sum(1 for i in range(len(chunk["samples"]))
                        if not any(s["sample"] == i for s in chunk["scenes"]))
        parsed += chunk["parsed"]
        kept += chunk["kept"]
        dropped.update(chunk["dropped"])
        entry = {"parsed": chunk["parsed"], "kept": chunk["kept"], "dropped": chunk["dropped"]}
        if ver_counts is not None:
            vchunk = verify_chunk(wd, q.id, rows)
            if vchunk is None:
                raise RuntimeError(f"verify chunk of {q.id} is missing or stale")
            st = collections.Counter(vchunk["status"])
            verdicts.update(st)
            entry["verified_kept"] = st.get("kept", 0)
            scenarios_out += [{**r, "Verification": text}
                              for r, text in zip(rows, vchunk["verifications"])]
        per_q[q.id] = entry
    io.write_jsonl(wd.root / "scenes.jsonl", scenes_out)
    report: dict[str, Any] = {
        "config": config.get("config_spec", ""),
        "generator": config.model.name,
        "generation": {
            "questions": gen_counts.items, "questions_run": gen_counts.run,
            "questions_resumed": gen_counts.resumed, "samples": n_samples,
            "finish_reasons": dict(sorted(finish.items())), "samples_without_scenes": no_scene,
            "scenes_parsed": parsed, "kept": kept, "dropped": dict(sorted(dropped.items())),
            "prompt": scene_prompt_of(config).source,  # a path, or "reconstruction"
            "word_limits": {"situation": [config.generation.min_situation_words,
                                          config.generation.max_situation_words],
                            "action": [config.generation.min_action_words,
                                       config.generation.max_action_words]},
            "dedup_threshold": config.generation.dedup_threshold,
        },
        "per_question": per_q,
    }
    if ver_counts is not None:
        io.write_jsonl(wd.root / "scenarios.jsonl", scenarios_out)
        report["verification"] = {
            "judge": config.verification.model or config.model.name,
            "questions_run": ver_counts.run, "questions_resumed": ver_counts.resumed,
            "rows": len(scenarios_out), "four_yes": verdicts.get("kept", 0),
            "status": dict(sorted(verdicts.items())),
        }
    io.write_text(wd.root / "report.json", json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    return report


def report_lines(report: dict[str, Any]) -> list[str]:
    """A short human-readable summary of a synthesis report."""
    g = report["generation"]
    out = [f"scene prompt: {g.get('prompt', 'reconstruction')}",
           f"generation ({report['generator']}): {g['questions']} questions "
           f"({g['questions_run']} run, {g['questions_resumed']} resumed), {g['samples']} samples "
           f"(finish: {', '.join(f'{k} {v}' for k, v in g['finish_reasons'].items()) or '-'}; "
           f"{g['samples_without_scenes']} without any scene)",
           f"  scenes parsed {g['scenes_parsed']}: kept {g['kept']}, dropped "
           f"{g['scenes_parsed'] - g['kept']}"]
    out += [f"    {reason}: {n}" for reason, n in g["dropped"].items()]
    v = report.get("verification")
    if v is not None:
        out.append(f"verification ({v['judge']}): {v['rows']} scenes, "
                   f"{v['four_yes']} with four Yes")
        out += [f"    {reason}: {n}" for reason, n in v["status"].items() if reason != "kept"]
    return out


def run_synthesis(config: Any, workdir: str | os.PathLike, *,
                  get_model: Callable[[str, str], Any] | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole pipeline for the questions of a synthesis config; resumable per question.
    Raises ``store.Stopped`` after the batch in hand when SIGTERM arrives.

    `get_model(name, dtype)` returns a ChatModel (or an object with its ``render`` and
    ``generate``); by default ``checkpoints.load_model`` wrapped in ChatModel, loaded at most
    once per (name, dtype), so the generator serves as the judge when both are the same model.
    Models are loaded only when a stage has questions left to run.
    """

    root = io.as_path(workdir)
    if root.exists() and not root.is_dir():
        raise InputError(f"--workdir {workdir}: exists and is not a directory")
    questions = select_questions(data_dir=config.input.data_dir or None,
                                 questions_file=config.input.questions_file or None,
                                 max_questions=config.max_questions)
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise InputError("questions: duplicate ids")
    if get_model is None:
        loaded: dict[tuple[str, str], ChatModel] = {}

        def get_model(name: str, dtype: str) -> ChatModel:

            if (name, dtype) not in loaded:
                loaded[(name, dtype)] = ChatModel(checkpoints.load_model(name, dtype=dtype),
                                                  date_string=date)
            return loaded[(name, dtype)]

    with store.Workdir(workdir) as wd:
        # dated chat templates write the run's first day, on every resume too
        date = sweep.first_day(wd)
        check_manifest(wd, config, date)
        gen = run_generation(config, wd, questions, get_model, log=log)
        ver = (run_verification(config, wd, questions, get_model, log=log)
               if config.verification.enabled else None)
        return assemble(config, wd, questions, gen, ver)