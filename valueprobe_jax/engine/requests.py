"""Score requests as plain records, and their tokenization (the boundary rule).

Requests are records (lm-eval-harness style): a generation-ready prompt, the continuation text
of every displayed option, and the displayed labels; results carry the raw numbers both the token
and the seq method need (``probing.representations`` turns them into distributions).

Tokenization (per request): prompt ids use the tokenizer's default special tokens unless the text
already starts with the BOS string (chat templates that write BOS themselves); continuations are
cut from ``tokenize(prompt + continuation)`` when the prompt ids are a prefix of it, otherwise
(the tokenizer merged across the boundary) the continuation is tokenized on its own, without
special tokens, and the request is flagged ``boundary_split`` (``boundary="slice"``, the paper's
released code, instead takes the full sequence's tokens after the prompt's length). Label tokens:
the bare label ("A") and the space-prefixed label (" A") as ``engine.labels`` looks them up; a
label form that is more than one token uses its first (non-boundary) token and is flagged in
``label_multi_token``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np

from valueprobe_jax.engine.labels import label_token
from valueprobe_jax.errors import InputError

@dataclasses.dataclass(frozen=True)
class ScoreRequest:
    """One prompt to score. ``prompt`` is generation-ready text ending where the answer begins;
    ``continuations[i]`` is the exact text scored for displayed option i (e.g. "A. text" plus the
    chat template's end of turn); ``labels[i]`` its displayed label ("A", "a", "0", ...)."""

    key: str
    prompt: str
    continuations: Sequence[str]
    labels: Sequence[str]


@dataclasses.dataclass
class ScoreResult:
    """Raw numbers of one request, in display order (float64)."""

    key: str
    token_logits: np.ndarray  # [k] logit of the bare label token at the answer position
    token_logits_space: np.ndarray  # [k] logit of the " A" token
    label_token_ids: np.ndarray  # [k, 2] int: (bare, space) token id used
    label_multi_token: np.ndarray  # [k, 2] bool: that label form is several tokens (first used)
    option_logprob: np.ndarray  # [n_cont] summed log-likelihood of each continuation
    option_ntokens: np.ndarray  # [n_cont] int
    n_prompt_tokens: int
    boundary_split: bool  # some continuation had to be tokenized apart from its prompt


@dataclasses.dataclass
class ScoreStats:
    """What a scoring run cost (accumulated over calls of one ``Scorer``)."""

    calls: int = 0  # jitted calls (prefills included)
    rows: int = 0
    tokens_processed: int = 0  # token slots run through the model, padding included
    tokens_real: int = 0  # non-padding token slots
    head_positions: int = 0  # positions the LM head ran on (padding included)
    flops: float = 0.0  # model FLOPs of the executed shapes (``flops_estimate``)
    compiles: int = 0  # new jit traces (= XLA compiles) caused by these calls
    shapes: dict = dataclasses.field(default_factory=dict)  # (kind, B, T, S, M, N) -> calls

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shapes"] = {" ".join(map(str, k)): v for k, v in sorted(self.shapes.items())}
        return d

    def add_call(self, key: tuple) -> None:
        """One more call of the jitted shape ``key``."""
        self.shapes[key] = self.shapes.get(key, 0) + 1



@dataclasses.dataclass(frozen=True)
class Encoded:
    """A request as token ids."""

    key: str
    prompt: tuple[int, ...]
    options: tuple[tuple[int, ...], ...]
    label_ids: np.ndarray  # [k, 2] int
    label_multi: np.ndarray  # [k, 2] bool
    boundary_split: bool


def text_ids(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    """Token ids of ``text``."""
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def prompt_add_special_tokens(tokenizer: Any, prompt: str) -> bool:
    """Tokenizer defaults (e.g. Llama's BOS), except when the text already begins with the BOS
    string because the chat template wrote it (then adding it again would double it)."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and prompt.startswith(bos))


# retokenize (ours) | slice (the paper's released code): see ``encode_request``
Boundary = Literal["retokenize", "slice"]
BOUNDARIES: tuple[Boundary, ...] = get_args(Boundary)


def encode_request(tokenizer: Any, req: ScoreRequest, *, add_special_tokens: bool | None = None,
                   label_cache: dict | None = None, label_lookup: str = "tokenize",
                   boundary: str = "retokenize") -> Encoded:
    """Tokenize one request following the boundary rule (module docstring).

    ``boundary``: where prompt + continuation tokenize differently from the prompt alone (the
    tokenizer merged across the boundary, e.g. ":\n" of a base-model prompt), "retokenize" (ours)
    scores the continuation tokenized on its own; "slice" (the paper's released code) scores the
    full sequence's tokens after the prompt's length, whatever they are. ``label_lookup``: see
    ``engine.labels`` ("tokenize" ours, "vocab" the paper's)."""
    if boundary not in BOUNDARIES:
        raise InputError(f"boundary {boundary!r}: choose from {', '.join(BOUNDARIES)}")
    if not isinstance(req.prompt, str) or not req.prompt:
        raise InputError(f"request {req.key!r}: empty prompt")
    add = prompt_add_special_tokens(tokenizer, req.prompt) if add_special_tokens is None \
        else add_special_tokens
    prompt = text_ids(tokenizer, req.prompt, add)
    if not prompt:
        raise InputError(f"request {req.key!r}: prompt tokenizes to nothing")
    n = len(prompt)
    options, split = [], False
    for i, cont in enumerate(req.continuations):
        if not cont:
            raise InputError(f"request {req.key!r}: continuation {i} is empty")
        full = text_ids(tokenizer, req.prompt + cont, add)
        if len(full) > n and (full[:n] == prompt or boundary == "slice"):
            options.append(tuple(full[n:]))
            split = split or full[:n] != prompt
        else:
            options.append(tuple(text_ids(tokenizer, cont, False)))
            split = True
    cache = {} if label_cache is None else label_cache
    k = len(req.labels)
    label_ids = np.zeros((k, 2), np.int64)
    multi = np.zeros((k, 2), bool)
    for i, lab in enumerate(req.labels):
        for j, text in enumerate((lab, " " + lab)):
            if (text, label_lookup) not in cache:
                cache[text, label_lookup] = label_token(tokenizer, text, lookup=label_lookup,
                                                        space=bool(j))
            label_ids[i, j], multi[i, j] = cache[text, label_lookup]
    return Encoded(req.key, tuple(prompt), tuple(options), label_ids, multi, split)


__all__ = ["ScoreRequest", "ScoreResult", "ScoreStats", "Encoded", "text_ids",
           "prompt_add_special_tokens", "BOUNDARIES", "encode_request"]
