"""WVS-7 human answer distributions per country and question, from the official respondent CSV.

The licensed file (WVS_Cross-National_Wave_7_csv_*.csv, downloaded by the user from
worldvaluessurvey.org) has one row per respondent with columns B_COUNTRY_ALPHA (ISO alpha-3),
W_WEIGHT (survey weight) and Q1..Q290. Negative codes (-1 don't know, -2 no answer, -4 not asked,
-5 missing) are missing. A distribution is the W_WEIGHT-weighted share of each answer among the
valid answers, indexed by the question's canonical option order.

Answer code -> option index: index = code - offset. Most questions are coded 1..k (offset 1).
Those coded from 0 (offset 0), following the WVS-7 codebook and the paper's released evaluation
code (its `qid_zero_start` list):
- Q94-Q105 membership: 0 "Don't belong", 1 inactive, 2 active member;
- Q119 women less corrupt than men: 0 "Hard to say", 1 strongly agree .. 4 strongly disagree;
- Q122-Q129 effects of immigration: 0 "Disagree", 1 "Hard to say", 2 "Agree".
A non-negative code outside 0..k-1 after the shift is counted as out of range and left out.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from valueprobe_jax.data.questions import Question
from valueprobe_jax.errors import InputError

ZERO_CODED = frozenset([f"Q{i}" for i in range(94, 106)] + ["Q119"]
                       + [f"Q{i}" for i in range(122, 130)])


def code_offset(qid: str) -> int:
    """Answer code of a question's first option: 0 for ZERO_CODED questions, else 1."""
    return 0 if qid in ZERO_CODED else 1


# Country names -> ISO alpha-3 as B_COUNTRY_ALPHA has them (WVS-7 participants; the paper's six
# first, with the names the paper's prompts use).
COUNTRY_ALPHA3 = {
    "United States": "USA", "Germany": "DEU", "Czech": "CZE", "China": "CHN", "Mexico": "MEX",
    "Egypt": "EGY",
    "USA": "USA", "United States of America": "USA", "Czech Republic": "CZE", "Czechia": "CZE",
    "Andorra": "AND", "Argentina": "ARG", "Armenia": "ARM", "Australia": "AUS",
    "Bangladesh": "BGD", "Bolivia": "BOL", "Brazil": "BRA", "Canada": "CAN", "Chile": "CHL",
    "Colombia": "COL", "Cyprus": "CYP", "Ecuador": "ECU", "Ethiopia": "ETH",
    "Great Britain": "GBR", "United Kingdom": "GBR", "Greece": "GRC", "Guatemala": "GTM",
    "Hong Kong": "HKG", "Indonesia": "IDN", "India": "IND", "Iran": "IRN", "Iraq": "IRQ",
    "Jordan": "JOR", "Japan": "JPN", "Kazakhstan": "KAZ", "Kenya": "KEN", "Kyrgyzstan": "KGZ",
    "South Korea": "KOR", "Korea": "KOR", "Lebanon": "LBN", "Libya": "LBY", "Macau": "MAC",
    "Morocco": "MAR", "Maldives": "MDV", "Myanmar": "MMR", "Mongolia": "MNG",
    "Malaysia": "MYS", "Nigeria": "NGA", "Nicaragua": "NIC", "Northern Ireland": "NIR",
    "Netherlands": "NLD", "New Zealand": "NZL", "Pakistan": "PAK", "Peru": "PER",
    "Philippines": "PHL", "Puerto Rico": "PRI", "Romania": "ROU", "Russia": "RUS",
    "Singapore": "SGP", "Serbia": "SRB", "Slovakia": "SVK", "Thailand": "THA",
    "Tajikistan": "TJK", "Tunisia": "TUN", "Turkey": "TUR", "Taiwan": "TWN", "Ukraine": "UKR",
    "Uruguay": "URY", "Uzbekistan": "UZB", "Venezuela": "VEN", "Vietnam": "VNM",
    "Zimbabwe": "ZWE",
}
_BY_LOWER = {k.lower(): v for k, v in COUNTRY_ALPHA3.items()}
ALPHA3_NAME = {"USA": "United States", "DEU": "Germany", "CZE": "Czech", "CHN": "China",
               "MEX": "Mexico", "EGY": "Egypt"}


def country_code(country: str) -> str:
    """ISO alpha-3 code of a country name (case-insensitive) or of an alpha-3 code itself."""
    if not isinstance(country, str) or not country.strip():
        raise InputError(f"country {country!r}: expected a country name or ISO alpha-3 code")
    key = country.strip()
    if key.lower() in _BY_LOWER:
        return _BY_LOWER[key.lower()]
    if len(key) == 3 and key.isalpha() and key.isupper():
        return key
    raise InputError(f"country {country!r}: unknown name (give its ISO alpha-3 code, e.g. DEU)")


@dataclasses.dataclass
class HumanDistributions:
    """dist[alpha3][qid]: probabilities over canonical options (absent: no valid answer);
    n_valid / n_out_of_range[alpha3][qid]: unweighted respondent counts."""

    dist: dict[str, dict[str, np.ndarray]]
    n_valid: dict[str, dict[str, int]]
    n_out_of_range: dict[str, dict[str, int]]
    missing_columns: list[str]

    def get(self, country: str, qid: str) -> np.ndarray | None:
        return self.dist.get(country_code(country), {}).get(qid)


def _read_columns(path: pathlib.Path, wanted: list[str]):
    """Read the wanted columns (matched case-insensitively) with pyarrow; returns (table, names)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    delimiter = ";" if header.count(";") > header.count(",") else ","
    names = [h.strip().strip('"') for h in header.rstrip("\r\n").split(delimiter)]
    by_upper = {n.upper(): n for n in names}
    for required in ("B_COUNTRY_ALPHA", "W_WEIGHT"):
        if required not in by_upper:
            raise InputError(f"{path}: no {required} column (is this the WVS-7 respondent CSV?)")
    present = {w: by_upper[w.upper()] for w in wanted if w.upper() in by_upper}
    types = {src: pa.float64() for w, src in present.items() if w != "B_COUNTRY_ALPHA"}
    types[by_upper["B_COUNTRY_ALPHA"]] = pa.string()
    try:
        table = pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(include_columns=list(present.values()),
                                                 column_types=types,
                                                 null_values=["", "NA", "NaN", " "]))
    except pa.ArrowInvalid as e:
        first = str(e).splitlines()[0]
        raise InputError(f"{path}: cannot be read as the WVS-7 CSV ({first})") from None
    return table, present


def human_distributions(csv_path: str | os.PathLike, questions: list[Question],
                        countries: list[str] | None = None, *,
                        weighted: bool = True) -> HumanDistributions:
    """Weighted answer distributions per country (all in the file, or `countries`) and question.
    ``weighted=False``: raw respondent counts, every respondent weighing 1 whatever W_WEIGHT says
    (the paper's released code, eval_utils.process_human_results)."""
    path = pathlib.Path(csv_path)
    wanted = ["B_COUNTRY_ALPHA", "W_WEIGHT"] + [q.id for q in questions]
    table, present = _read_columns(path, wanted)
    country_col = np.asarray(table[present["B_COUNTRY_ALPHA"]].to_pylist(), dtype=object)
    country_col = np.array([(c or "").strip() for c in country_col], dtype=object)
    weight = table[present["W_WEIGHT"]].to_numpy(zero_copy_only=False).astype(np.float64)
    if not weighted:
        weight = np.ones_like(weight)
    if countries is None:
        codes = sorted(set(country_col) - {""})
    else:
        codes = [country_code(c) for c in countries]
    missing = [q.id for q in questions if q.id not in present]
    dist: dict[str, dict[str, np.ndarray]] = {}
    n_valid: dict[str, dict[str, int]] = {}
    n_oor: dict[str, dict[str, int]] = {}
    for code in codes:
        rows = (country_col == code) & np.isfinite(weight)
        dist[code], n_valid[code], n_oor[code] = {}, {}, {}
        for q in questions:
            if q.id not in present:
                continue
            answers = table[present[q.id]].to_numpy(zero_copy_only=False)[rows]
            w = weight[rows]
            answered = np.isfinite(answers) & (answers >= 0)
            index = answers - code_offset(q.id)
            k = len(q.options)
            valid = answered & (index >= 0) & (index < k) & (index == np.round(index))
            n_oor[code][q.id] = int(np.sum(answered & ~valid))
            n_valid[code][q.id] = int(np.sum(valid))
            total = float(np.sum(w[valid]))
            if n_valid[code][q.id] == 0 or total <= 0:
                continue
            p = np.bincount(index[valid].astype(np.int64), weights=w[valid], minlength=k) / total
            dist[code][q.id] = p
    return HumanDistributions(dist, n_valid, n_oor, missing)
