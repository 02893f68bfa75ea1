"""A sweep config -> work items -> engine -> Parquet shards (the body of `valueprobe run`).

Robustness and demographic sweeps are value probes over styles x variants x countries; the
action-agreement sweep adds action ratings of the released (or synthesised) scenarios. Items of
both kinds go through the same chunked, resumable runner (``sweep.run_chunks`` on the durable
store: the workdir lock is taken before the model loads, so a second runner fails at once).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from valueprobe_jax.experiments import sweep
from valueprobe_jax.data.scenarios import load_scenarios, scenarios_by_qid
from valueprobe_jax.errors import InputError
from valueprobe_jax.probing.engine import ProbeEngine, ProbeRequest, ProbeSettings, RatingRequest
from valueprobe_jax.probing.prompts import build_prompt
from valueprobe_jax.probing.work import probe_countries
from valueprobe_jax.data.selection import select_questions
from valueprobe_jax.parallel.sharding import make_mesh
from valueprobe_jax.parallel.multihost import (WorkSplit, initialize_distributed, same_date,
                                               work_split)
from valueprobe_jax.models.checkpoints import load_model


@dataclasses.dataclass
class Plan:
    """Everything a sweep will do, before any model is loaded."""

    items: list[sweep.WorkItem]
    questions: dict[str, Any]
    scenarios: dict[str, Any]  # scenario id -> Scenario
    scenario_report: Any = None


def plan_sweep(config: ml_collections.ConfigDict) -> Plan:
    """Expand a config into its work items (validating styles, variants and countries early)."""
    data_dir = config.input.data_dir or None
    questions = select_questions(data_dir=data_dir, questions_file=config.input.questions_file or None,
                                 max_questions=config.max_questions)
    p = config.probe
    if not probe_countries(p.countries, p.include_no_country):
        raise InputError("probe.countries is empty and probe.include_no_country is False: nothing to probe")
    items = sweep.expand_probe_items(config, [q.id for q in questions])
    # build the first question's prompt of each (style, variant, country) now: bad names fail
    # before any model loads
    first = questions[0]
    for it in items:
        if it.qid == first.id:
            build_prompt(first, it.style, it.variant, it.country, seed=p.shuffle_seed)
    scenarios: dict[str, Any] = {}
    report = None
    if config.actions.enabled:
        kept, report = load_scenarios(data_dir, path=config.actions.scenarios_file or None,
                                      questions=questions, verdicts=config.actions.verdicts)
        by_qid = scenarios_by_qid(kept, limit=config.actions.max_scenarios)
        wanted = {q.id for q in questions}
        by_qid = {qid: v for qid, v in by_qid.items() if qid in wanted}
        scenarios = {s.id: s for v in by_qid.values() for s in v}
        items += sweep.expand_rating_items(config, {qid: [s.id for s in v] for qid, v in by_qid.items()})
    return Plan(items, {q.id: q for q in questions}, scenarios, report)


def chunk_processor(engine: ProbeEngine, plan: Plan, config: ml_collections.ConfigDict):
    """The function the runner calls on each chunk: probes and ratings -> rows."""
    shuffle_seed = config.probe.shuffle_seed

    def process(chunk: list[sweep.WorkItem]) -> list[dict[str, Any]]:
        probes = [ProbeRequest(it.key, build_prompt(plan.questions[it.qid], it.style, it.variant,
                                                    it.country, seed=shuffle_seed), config.experiment)
                  for it in chunk if it.kind == "probe"]
        ratings = [RatingRequest(it.key, it.qid, plan.scenarios[it.scenario_id], it.action, it.template)
                   for it in chunk if it.kind == "rating"]
        return engine.probe(probes) + engine.rate(ratings, experiment=config.experiment)

    return process


def run_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
               progress: bool = True) -> sweep.SweepStats:
    """Run (or resume) the sweep of ``config`` in ``workdir`` on this host's share of chunks."""
    import jax  # noqa: PLC0415


    plan = plan_sweep(config)
    ProbeSettings.from_config(config)  # bad settings fail before the workdir is touched
    initialize_distributed()
    # a mesh that spans hosts runs every chunk on all of them in lockstep (process 0 writes);
    # a mesh local to each host lets the hosts split the chunks
    mesh = make_mesh(config.run.mesh) if (config.run.mesh or jax.process_count() > 1) else None
    split = work_split(mesh) if mesh is not None else WorkSplit(0, 1, True, False)
    kw = dict(process_index=split.index, process_count=split.count, writer=split.writer,
              lockstep=split.lockstep, progress=progress)
    with sweep.open_workdir(workdir, process_index=split.index, writer=split.writer) as wd:
        # the date dated chat templates write: the manifest's (resume) or today's (first run),
        # process 0's on every host (a pod's first start may straddle midnight)
        date = same_date(sweep.pin_date_string(wd, config))
        with config.probe.unlocked():
            config.probe.date_string = date
        settings = ProbeSettings.from_config(config)
        if split.writer:
            sweep.check_manifest(wd, config, len(plan.items))  # fail before loading
        todo = sweep.pending_chunks(wd, config, plan.items, split.index, split.count)
        if not todo and not split.lockstep:
            return sweep.run_chunks(wd, config, plan.items, _nothing, **kw)
        model = load_model(config.model.name, dtype=config.model.dtype)
        engine = ProbeEngine(model, settings, mesh=mesh)
        return sweep.run_chunks(wd, config, plan.items, chunk_processor(engine, plan, config), **kw)


def _nothing(chunk: list[sweep.WorkItem]) -> list[dict[str, Any]]:
    raise AssertionError("no chunk is pending")
