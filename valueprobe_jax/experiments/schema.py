"""The one shape every sweep config has (big_vision style: sections input / model / probe /
actions / run), so configs/*.py only state what differs between experiments."""

from __future__ import annotations

import ml_collections

from valueprobe_jax.vocabulary import METHODS, PARSE_MODES, STYLES, VARIANTS


def base_config(experiment: str, model: str) -> ml_collections.ConfigDict:
    """Defaults shared by every experiment: the paper's procedure on every question."""
    c = ml_collections.ConfigDict()
    c.experiment = experiment
    c.max_questions = 0  # 0 = all questions of the bank

    c.input = ml_collections.ConfigDict()
    c.input.data_dir = ""  # "" = VALUEPROBE_DATA_DIR, else download (pinned, checksummed)
    c.input.questions_file = ""  # a JSON list of {"id", "question", "options"} instead of the bank

    c.model = ml_collections.ConfigDict()
    c.model.name = model  # registry name or a local checkpoint directory
    c.model.dtype = "float32"
    c.model.strategy = "auto"  # auto (prefix_cache for a long shared prefix, else packed) | naive | padded | packed | prefix_cache

    c.probe = ml_collections.ConfigDict()
    c.probe.styles = list(STYLES)
    c.probe.variants = list(VARIANTS)
    c.probe.countries = []  # country prompts; the no-country prompt is added by include_no_country
    c.probe.include_no_country = True
    c.probe.methods = list(METHODS)
    c.probe.samples = 10  # paper: N=10
    c.probe.temperature = 1.0
    c.probe.top_k = 0
    c.probe.top_p = 1.0
    c.probe.max_new_tokens = 64
    c.probe.seed = 0
    c.probe.shuffle_seed = 0
    c.probe.parse_mode = PARSE_MODES[0]  # label_aware | paper

    c.actions = ml_collections.ConfigDict()
    c.actions.enabled = False
    c.actions.scenarios_file = ""  # "" = the paper's released file; or `valueprobe synthesize` output
    c.actions.templates = [0, 1, 2]
    c.actions.max_scenarios = 10  # per question, as the paper
    c.actions.max_new_tokens = 20
    c.actions.samples = 1
    c.actions.temperature = 0.0  # greedy ratings (the paper used each model's default generation config)

    c.run = ml_collections.ConfigDict()
    c.run.mesh = ""  # e.g. "data=2,tensor=4"; "" = all local devices on the data axis
    c.run.chunk_size = 32  # work items per Parquet shard (the unit of resumption)
    c.run.batch_prompts = 8  # prompts per engine call
    return c
