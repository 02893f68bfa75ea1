"""ASCII transliteration of prompt text, as the paper did (it ran `unidecode` over every rendered
message). The project does not depend on unidecode: the characters that occur in WVS question
texts (curly quotes, dashes, ellipsis, no-break space) map exactly as unidecode maps them, letters
with accents lose their accents (NFKD), and anything left that has no ASCII form is dropped."""

from __future__ import annotations

import unicodedata

# unidecode's output for the punctuation seen in survey texts (checked against the released
# input_dict.json: "Don’t" -> "Don't", "success—it’s" -> "success--it's").
_MAP = {
    "\u2018": "'", "\u2019": "'", "\u201a": ",", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": ',,', "\u201f": '"', "\u2033": '"',
    "\u00ab": "<<", "\u00bb": ">>", "\u2039": "<", "\u203a": ">",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "--", "\u2015": "--",
    "\u2212": "-", "\u2026": "...", "\u2022": "*", "\u00b7": "*", "\u00d7": "x",
    "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ", "\u202f": " ", "\u200b": "",
    "\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE", "\u0153": "oe", "\u0152": "OE",
    "\u00f8": "o", "\u00d8": "O", "\u0142": "l", "\u0141": "L", "\u0111": "d", "\u0110": "D",
    "\u00fe": "th", "\u00de": "Th", "\u00f0": "d", "\u00d0": "D", "\u0131": "i",
    "\u20ac": "EUR", "\u00a3": "PS", "\u00b0": "deg",
}


def to_ascii(text: str) -> str:
    """Return `text` with every character replaced by its ASCII transliteration."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        if ch.isascii():
            out.append(ch)
        elif ch in _MAP:
            out.append(_MAP[ch])
        else:
            decomposed = unicodedata.normalize("NFKD", ch)
            out.append("".join(c for c in decomposed if c.isascii()))
    return "".join(out)
