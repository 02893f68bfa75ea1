"""The paper's vocabulary, defined once: prompt styles, option variants, the prompted countries,
the three probing methods, the answer-parsing modes, the two procedures (ours, the paper's)
and the 1-10 rating scale.

Every closed set is a ``typing.Literal`` alias and the tuple of its values in the paper's order
(the tuple is read off the alias, so the two cannot drift apart). The values stay plain strings
(and ints for ratings) because they are what configs hold and what result rows store.

This module sits in the bottom layer (beside ``errors``) because more than one layer names these
terms: the engine computes the expected rating over ``RATINGS``; probing renders styles and
variants and parses answers; experiments, analysis and the CLI list, validate and order them.
"""

from __future__ import annotations

from typing import Iterable, Literal, get_args

from valueprobe_jax.errors import InputError

Style = Literal["default", "prefixed", "one_shot"]
Variant = Literal["baseline", "reverse", "num", "lower", "shuffle"]
Country = Literal["United States", "Germany", "Czech", "China", "Mexico", "Egypt"]
Method = Literal["token", "seq", "text"]
ParseMode = Literal["label_aware", "paper"]  # label_aware: the variant's own labels; paper: the release's regex
ProcedureName = Literal["ours", "paper"]  # ours: our fixes and choices (default); paper: the release's

STYLES: tuple[Style, ...] = get_args(Style)
VARIANTS: tuple[Variant, ...] = get_args(Variant)
COUNTRIES: tuple[Country, ...] = get_args(Country)  # the paper's six prompted countries
METHODS: tuple[Method, ...] = get_args(Method)
PARSE_MODES: tuple[ParseMode, ...] = get_args(ParseMode)
PROCEDURE_NAMES: tuple[ProcedureName, ...] = get_args(ProcedureName)  # what each one means: probing/procedure.py
RATINGS: tuple[int, ...] = tuple(range(1, 11))  # the action-rating scale 1..10


def check_choice(what: str, value: object, allowed: Iterable[str]) -> None:
    """Raise a one-line InputError naming the input and the allowed values unless value is one."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise InputError(f"{what} {value!r}: unknown (choose from {', '.join(allowed)})")


def check_choices(what: str, values: Iterable[str], allowed: Iterable[str]) -> None:
    """``check_choice`` for a list (a config's styles, a CLI's comma list); empty is an error."""
    values, allowed = tuple(values), tuple(allowed)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        shown = ",".join(map(str, values)) or "(none)"
        raise InputError(f"{what} {shown}: {'unknown ' + ', '.join(map(repr, bad)) if bad else 'empty'}"
                         f" (choose from {', '.join(allowed)})")
