"""Which vocabulary ids stand for an option label ("A", "7") in the token method.

The token method reads the logits of each label at the first answer position in two forms, bare
("A") and after a space (" A"). Two lookups:

- ``"vocab"``, the paper's (src/inference_utils.py, get_results): bare = ``convert_tokens_to_ids
  (label)``, a vocabulary lookup of the label string as a token (for SentencePiece that is the
  mid-word piece "A", not the word-initial "▁A"; a label that is no token gives the unk id);
  space = ``convert_tokens_to_ids(tokenize(" " + label)[0])``, the first token even when that is
  a bare word boundary ("▁" or "Ġ" alone).
- ``"tokenize"``, ours: the first token of the label's tokenization (no special tokens), skipping
  leading tokens that are only a word boundary (they decode to whitespace). Without the skip a
  SentencePiece tokenizer maps every digit label to "▁" ("0" -> ["▁", "0"]), so all digit labels
  would read one logit.

For byte-level BPE tokenizers (Llama-3, Qwen2.5, SmolLM2) "A".."J" and "0".."9" are vocabulary
entries and both lookups give the same ids, except where the tokenizer splits " 7" into a bare
"Ġ" and "7": the paper then reads "Ġ" for every digit label, ours reads "7".
"""

from __future__ import annotations

from typing import Any, NamedTuple

from valueprobe_jax.errors import InputError

LOOKUPS = ("tokenize", "vocab")


class LabelToken(NamedTuple):
    """One form of a label: the id read, and whether the form is more than that one token
    (for "vocab"'s bare form: whether the label is not a vocabulary entry at all)."""

    id: int
    multi: bool


def _is_boundary(tokenizer: Any, token_id: int) -> bool:
    """A token that is only a word boundary: it decodes to whitespace (SentencePiece "▁")."""
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)  # minimal tokenizers lack it
    if convert is not None and convert(token_id) in ("\u2581", "\u0120"):  # "▁", "Ġ" (a space)
        return True
    return tokenizer.decode([token_id]).strip() == ""


def label_token(tokenizer: Any, text: str, *, lookup: str = "tokenize",
                space: bool | None = None) -> LabelToken:
    """The id for one label form ``text`` ("A" or " A"); ``space`` defaults to text[0] == " "."""
    if lookup not in LOOKUPS:
        raise InputError(f"lookup: expected one of {', '.join(LOOKUPS)}, got {lookup!r}")
    if not text.strip():
        raise InputError(f"label {text!r}: empty")
    space = text.startswith(" ") if space is None else space
    if lookup == "vocab":
        if not space:
            tid = tokenizer.convert_tokens_to_ids(text)
            if tid is None:
                raise InputError(f"label {text!r}: not a vocabulary entry and the tokenizer "
                                 "has no unk token")
            return LabelToken(int(tid), tid == tokenizer.unk_token_id)
        pieces = tokenizer.tokenize(text)
        if not pieces:
            raise InputError(f"label {text!r}: tokenizes to nothing")
        return LabelToken(int(tokenizer.convert_tokens_to_ids(pieces[0])), len(pieces) > 1)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    while len(ids) > 1 and _is_boundary(tokenizer, ids[0]):
        ids = ids[1:]
    if not ids:
        raise InputError(f"label {text!r}: tokenizes to nothing")
    return LabelToken(int(ids[0]), len(ids) > 1)


def label_token_ids(tokenizer: Any, label: str, lookup: str = "tokenize") -> tuple[int, int]:
    """(bare id, space id) of ``label`` under ``lookup`` ("tokenize": ours; "vocab": the paper's)."""
    return (label_token(tokenizer, label, lookup=lookup, space=False).id,
            label_token(tokenizer, " " + label, lookup=lookup, space=True).id)


__all__ = ["LOOKUPS", "LabelToken", "label_token", "label_token_ids"]
