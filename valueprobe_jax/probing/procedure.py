"""What each procedure means: the one table behind the ``procedure`` switch ("ours" | "paper").

``paper`` is the released code's procedure (shensq/Revisiting-LLM-Value-Probing-Strategies @
339b4db, src/inference_utils.py, parse_generation.py, construct_inputs.py, run_action_scoring.py,
compute_metrics.py, eval_utils.py); ``ours`` keeps the choices we believe are better, each with a
switch (the field of ``Procedure`` and the config field named beside it). Fidelity fixes that
hold in both procedures (original option text in the seq continuation, Falcon-7B-Instruct's chat
template, no end token after a BLOOMZ answer) are not switches and are not in this table.

Where a field takes effect:

| field | config field | read by |
|---|---|---|
| parse_mode | probe.parse_mode | probing.parsing (text answers) |
| variants | probe.variants | work items (robustness, demographic) |
| action_variants | probe.variants | work items of configs/action_agreement.py |
| countries | probe.countries | work items of configs/demographic.py |
| label_lookup | probe.label_lookup | engine: ids of the token method's labels (engine.labels) |
| boundary | probe.boundary | engine: where the seq continuation starts |
| sampler | probe.sampler | engine: the text method's sampler |
| ratings | actions.sampler | engine: the rating generations |
| rating_parse | actions.parse_mode | probing.parsing.parse_rating |
| verdicts | actions.verdicts | data.scenarios.load_scenarios |
| middle | (report --procedure) | analysis: the odd middle option in value-action scores |
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

from valueprobe_jax.data.scenarios import VERDICT_MODES
from valueprobe_jax.engine.labels import LOOKUPS
from valueprobe_jax.engine.requests import BOUNDARIES, Boundary
from valueprobe_jax.vocabulary import (COUNTRIES, PARSE_MODES, PROCEDURE_NAMES, VARIANTS, Country,
                                       ParseMode, ProcedureName, Variant, check_choice)

Sampler = Literal["plain", "generation_config"]
RatingSampler = Literal["greedy", "generation_config"]
RatingParse = Literal["strict", "paper"]
Middle = Literal["split", "second"]

# plain (ours): probe.temperature / top_k / top_p as configured, stop at EOS and end of turn;
# generation_config (the paper's): the checkpoint's generation_config.json (transformers 4.45
# defaults where absent) for top_k, top_p, repetition_penalty and eos ids, temperature 1.0,
# probe.max_new_tokens (64) new tokens.
SAMPLERS: tuple[Sampler, ...] = get_args(Sampler)
# greedy (ours); generation_config (the paper's pipeline(): sampled with the checkpoint's
# temperature / top_k / top_p / repetition_penalty where it sets do_sample, greedy otherwise).
RATING_SAMPLERS: tuple[RatingSampler, ...] = get_args(RatingSampler)
RATING_PARSES: tuple[RatingParse, ...] = get_args(RatingParse)
# split (ours): an odd middle option counts half to each end; second: to the Person B end
MIDDLES: tuple[Middle, ...] = get_args(Middle)

# the release's variants (run_exp1.sh / run_exp2.sh, compute_metrics) and countries (no Czech)
PAPER_VARIANTS: tuple[Variant, ...] = ("baseline", "reverse", "num")
PAPER_COUNTRIES: tuple[Country, ...] = ("China", "Egypt", "Mexico", "United States", "Germany")



def check_engine_choices(label_lookup: str, boundary: str, sampler: str, rating_sampler: str,
                         rating_parse: str) -> None:
    """One-line errors for the choices a procedure hands the engine (a ``Procedure`` row and a
    sweep's ``ProbeSettings`` both hold them)."""
    check_choice("label lookup", label_lookup, LOOKUPS)
    check_choice("boundary", boundary, BOUNDARIES)
    check_choice("sampler", sampler, SAMPLERS)
    check_choice("rating sampler", rating_sampler, RATING_SAMPLERS)
    check_choice("rating parse mode", rating_parse, RATING_PARSES)

@dataclasses.dataclass(frozen=True)
class Procedure:
    """The defaults one procedure gives a sweep config (see the module table)."""

    name: ProcedureName
    parse_mode: ParseMode
    variants: tuple[Variant, ...]
    action_variants: tuple[Variant, ...]
    countries: tuple[Country, ...]
    label_lookup: str  # one of engine.labels.LOOKUPS
    boundary: Boundary
    sampler: Sampler
    ratings: RatingSampler
    rating_parse: RatingParse
    verdicts: str  # one of data.scenarios.VERDICT_MODES
    middle: Middle

    def __post_init__(self) -> None:
        check_choice("procedure", self.name, PROCEDURE_NAMES)
        check_choice("parse mode", self.parse_mode, PARSE_MODES)
        for v in self.variants + self.action_variants:
            check_choice("variant", v, VARIANTS)
        for c in self.countries:
            check_choice("country", c, COUNTRIES)
        check_engine_choices(self.label_lookup, self.boundary, self.sampler, self.ratings,
                             self.rating_parse)
        check_choice("verdicts", self.verdicts, VERDICT_MODES)
        check_choice("middle", self.middle, MIDDLES)


PROCEDURES: dict[ProcedureName, Procedure] = {
    "ours": Procedure(
        name="ours", parse_mode="label_aware", variants=VARIANTS, action_variants=("baseline",),
        countries=COUNTRIES, label_lookup="tokenize", boundary="retokenize", sampler="plain",
        ratings="greedy", rating_parse="strict", verdicts="lenient", middle="split"),
    "paper": Procedure(
        name="paper", parse_mode="paper", variants=PAPER_VARIANTS, action_variants=PAPER_VARIANTS,
        countries=PAPER_COUNTRIES, label_lookup="vocab", boundary="slice",
        sampler="generation_config", ratings="generation_config", rating_parse="paper",
        verdicts="strict", middle="second"),
}
assert tuple(PROCEDURES) == PROCEDURE_NAMES


def get_procedure(name: str) -> Procedure:
    """The table row of a procedure name; a one-line InputError naming the allowed values."""
    check_choice("procedure", name, PROCEDURE_NAMES)
    return PROCEDURES[name]  # type: ignore[index]
