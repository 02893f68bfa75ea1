"""The one expansion of a value-probe sweep: styles x variants x countries x questions, each cell
with its stable row key.

The order is style-major (style, then variant, then country, then question), so prompts that
share a long prefix (a style's system message, its one-shot example) stay together; a sweep cuts
its resumable chunks from this list, so chunk composition, and with it every stored number,
depends on the order staying exactly this.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple, Sequence

from valueprobe_jax.vocabulary import Style, Variant


class ProbeCell(NamedTuple):
    """One value probe of a sweep: a question in one style, variant and country, and its key."""

    key: str
    style: Style
    variant: Variant
    country: str | None
    qid: str


def probe_key(experiment: str, model: str, style: str, variant: str, country: str | None, qid: str) -> str:
    """The stable row key of one probe (also the key sweeps resume by)."""
    return f"{experiment}|{model}|{style}|{variant}|{country or '-'}|{qid}"


def probe_countries(countries: Sequence[str], include_no_country: bool) -> list[str | None]:
    """The country conditions of a sweep: None (no country prompt) first when included."""
    return ([None] if include_no_country else []) + list(countries)


def probe_cells(experiment: str, model: str, styles: Sequence[Style], variants: Sequence[Variant],
                countries: Sequence[str | None], qids: Sequence[str]) -> list[ProbeCell]:
    """Every (style, variant, country, question) cell with its row key, style-major."""
    return [ProbeCell(probe_key(experiment, model, s, v, c, q), s, v, c, q)
            for s, v, c, q in itertools.product(styles, variants, countries, qids)]
