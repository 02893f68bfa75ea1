"""The one shape every sweep config has (big_vision style: sections input / model / probe /
actions / run), so configs/*.py only state what differs between experiments.

The procedure switch (``procedure``: "ours" | "paper", what each means: probing/procedure.py).
Precedence, lowest first:

1. ``base_config`` defaults, with the fields the procedure governs filled from its table
   (probe.parse_mode, probe.variants, probe.label_lookup, probe.boundary, probe.sampler,
   actions.sampler, actions.parse_mode, actions.verdicts);
2. the experiment's config file (``get_config``), which reads the procedure's table for what is
   its own (configs/demographic.py: ``proc.countries``; configs/action_agreement.py:
   ``proc.action_variants``) and sets what no procedure governs;
3. ``--config.FIELD=VALUE`` overrides: an explicit value always wins
   (``:MODEL,paper --config.probe.variants=baseline`` probes the baseline variant only, with
   every other paper default).

The procedure itself is chosen before step 1: by the config argument (``FILE.py:MODEL,paper``,
combinable with ``runlocal`` in any order) or by ``--config.procedure=paper``, which
``load_config`` hands to ``get_config`` the same way (it is not applied after the file, so it
never clobbers the file's own settings; when both are given the command-line one wins).
"""

from __future__ import annotations

import ml_collections

from valueprobe_jax.errors import InputError
from valueprobe_jax.probing.procedure import Procedure, get_procedure
from valueprobe_jax.vocabulary import METHODS, PROCEDURE_NAMES, STYLES

# config-argument flags besides the procedure names ("MODEL,paper,runlocal")
ARG_FLAGS = ("runlocal",)


def parse_config_arg(arg: str, default_model: str) -> tuple[str, Procedure, set[str]]:
    """``"MODEL[,FLAG...]"`` -> (model, procedure, flags). FLAGs: a procedure name or ``runlocal``
    (any order); unknown flags are a one-line InputError naming the allowed ones."""
    model, *flags = [t.strip() for t in arg.split(",")] if arg else [default_model]
    model = model or default_model
    procs = [f for f in flags if f in PROCEDURE_NAMES]
    bad = [f for f in flags if f not in PROCEDURE_NAMES and f not in ARG_FLAGS]
    if bad or len(procs) > 1:
        what = f"unknown {', '.join(map(repr, bad))}" if bad else "two procedures"
        raise InputError(f"config argument {arg!r}: {what} (after MODEL, choose from "
                         f"{', '.join(PROCEDURE_NAMES + ARG_FLAGS)})")
    return model, get_procedure(procs[0] if procs else "ours"), set(flags) - set(procs)


def with_procedure(arg: str, procedure: str, default_model: str = "") -> str:
    """The config argument with its procedure flag replaced by ``procedure``."""
    model, *flags = [t.strip() for t in arg.split(",")] if arg else [default_model]
    get_procedure(procedure)  # validate
    return ",".join([model] + [f for f in flags if f not in PROCEDURE_NAMES] + [procedure])


def base_config(experiment: str, model: str, procedure: Procedure | str = "ours"
                ) -> ml_collections.ConfigDict:
    """Defaults shared by every experiment, the procedure's where it governs a field."""
    proc = get_procedure(procedure) if isinstance(procedure, str) else procedure
    c = ml_collections.ConfigDict()
    c.experiment = experiment
    c.procedure = proc.name  # ours | paper (probing/procedure.py); record of the defaults applied
    c.max_questions = 0  # 0 = all questions of the bank

    c.input = ml_collections.ConfigDict()
    c.input.data_dir = ""  # "" = VALUEPROBE_DATA_DIR, else download (pinned, checksummed)
    c.input.questions_file = ""  # a JSON list of {"id", "question", "options"} instead of the bank

    c.model = ml_collections.ConfigDict()
    c.model.name = model  # registry name or a local checkpoint directory
    c.model.dtype = "float32"
    c.model.strategy = "auto"  # auto (shared_prefill with the text method; else prefix_cache for a long shared prefix, else packed) | shared_prefill | naive | padded | packed | prefix_cache

    c.probe = ml_collections.ConfigDict()
    c.probe.styles = list(STYLES)
    c.probe.variants = list(proc.variants)
    c.probe.countries = []  # country prompts; the no-country prompt is added by include_no_country
    c.probe.include_no_country = True
    c.probe.methods = list(METHODS)
    c.probe.samples = 10  # paper: N=10
    c.probe.sampler = proc.sampler  # plain: the three fields below | generation_config: the checkpoint's
    c.probe.temperature = 1.0  # plain sampler only (generation_config: 1.0 as the paper)
    c.probe.top_k = 0  # plain sampler only
    c.probe.top_p = 1.0  # plain sampler only
    c.probe.max_new_tokens = 64
    c.probe.seed = 0
    c.probe.shuffle_seed = 0
    c.probe.parse_mode = proc.parse_mode  # label_aware | paper
    c.probe.label_lookup = proc.label_lookup  # tokenize | vocab (token method's label ids)
    c.probe.boundary = proc.boundary  # retokenize | slice (seq continuation at a merged boundary)
    # date a chat template writes (Llama-3.x "Today Date"); "" = pinned to the sweep's first run
    # day and recorded in the workdir manifest (not part of the config fingerprint)
    c.probe.date_string = ""

    c.actions = ml_collections.ConfigDict()
    c.actions.enabled = False
    c.actions.scenarios_file = ""  # "" = the paper's released file; or `valueprobe synthesize` output
    c.actions.templates = [0, 1, 2]
    c.actions.max_scenarios = 10  # per question, as the paper
    c.actions.max_new_tokens = 20
    c.actions.samples = 1
    c.actions.sampler = proc.ratings  # greedy | generation_config (the paper's pipeline() decoding)
    c.actions.temperature = 0.0  # greedy sampler: 0 = greedy decoding
    c.actions.parse_mode = proc.rating_parse  # strict (one integer 1..10) | paper (first integer, -1)
    c.actions.verdicts = proc.verdicts  # lenient | strict (the paper's json.loads of each verdict)

    c.run = ml_collections.ConfigDict()
    c.run.mesh = ""  # e.g. "data=2,tensor=4"; "" = all local devices on the data axis
    c.run.chunk_size = 32  # work items per Parquet shard (the unit of resumption)
    c.run.batch_prompts = 8  # prompts per engine call
    return c
