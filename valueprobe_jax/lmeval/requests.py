"""lm-eval requests as token ids, tokenized exactly as lm-eval's HF backend (HFLM) does, so the
numbers of both backends are comparable request by request.

The context/continuation split itself is lm-eval's own (``TemplateLM.loglikelihood`` and
``_encode_pair``: trailing whitespace of the context moves onto the continuation, the pair is
tokenized whole and the context's tokens are cut off its front, an empty context becomes the
prefix token). This module supplies the pieces HFLM defines around it: its special-token rule,
its prefix token, its left truncation, and the grouping of continuations under one context that
lets the packed scorer run each context once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from valueprobe_jax.errors import InputError


def prefix_token_id(tokenizer: Any, override: int | None = None) -> int:
    """HFLM's prefix token (the context of an empty-context request and of rolling windows):
    ``override``, else BOS, else EOS."""
    if override is not None:
        return int(override)
    for tid in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if tid is not None:
            return int(tid)
    raise InputError("tokenizer: has neither a BOS nor an EOS token; pass prefix_token_id=")


def special_tokens_kwargs(add_special_tokens: bool | None, add_bos_token: bool | None
                          ) -> dict[str, bool]:
    """HFLM's ``_add_special_kwargs``: an explicit flag, else ``add_bos_token``, else the
    tokenizer's default."""
    if add_special_tokens is not None:
        return {"add_special_tokens": add_special_tokens}
    if add_bos_token is not None:
        return {"add_special_tokens": add_bos_token}
    return {}


def tok_encode(tokenizer: Any, text: str, *, add_special_tokens: bool | None = None,
               add_bos_token: bool | None = None, bos_text: str | None = None) -> list[int]:
    """HFLM.tok_encode: the tokenizer's default special tokens (or ``add_bos_token``), but none
    when the text already starts with ``bos_text`` (a chat template wrote it)."""
    kw = special_tokens_kwargs(add_special_tokens, add_bos_token)
    if add_special_tokens is None and bos_text and text.startswith(bos_text):
        kw["add_special_tokens"] = False
    return list(tokenizer.encode(text, **kw))


def encode_generation_context(tokenizer: Any, text: str, *, add_bos_token: bool | None = None
                              ) -> list[int]:
    """HFLM.tok_batch_encode for one generation context (its BOS test uses the tokenizer's BOS
    string, not the prefix token's text as ``tok_encode`` does)."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        kw = {"add_special_tokens": False}
    else:
        kw = special_tokens_kwargs(None, add_bos_token)
    return list(tokenizer(text, **kw)["input_ids"])


def truncate_pair(context: Sequence[int], continuation: Sequence[int], max_length: int
                  ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """HFLM's left truncation ``(context + continuation)[-(max_length + 1):]``: the model reads at
    most ``max_length`` tokens (the last continuation token is scored, never read)."""
    ctx, cont = tuple(context), tuple(continuation)
    if len(cont) > max_length:
        raise InputError(f"a continuation of {len(cont)} tokens does not fit max_length "
                         f"{max_length}")
    whole = ctx + cont
    if len(whole) > max_length + 1:
        ctx = whole[-(max_length + 1):len(whole) - len(cont)]
    return ctx, cont


@dataclasses.dataclass
class ContextGroup:
    """One distinct context and every continuation asked of it (duplicates scored once)."""

    context: tuple[int, ...]
    continuations: list[tuple[int, ...]] = dataclasses.field(default_factory=list)
    # per request of the group: (request index, index into continuations)
    requests: list[tuple[int, int]] = dataclasses.field(default_factory=list)


def group_by_context(pairs: Iterable[tuple[Sequence[int], Sequence[int]]]) -> list[ContextGroup]:
    """Requests (context ids, continuation ids) -> one group per distinct context, sorted by
    context tokens so contexts that share a prefix (few-shot examples, a system prompt) sit
    next to each other; the order of the input does not matter."""
    groups: dict[tuple[int, ...], ContextGroup] = {}
    index: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    for i, (ctx, cont) in enumerate(pairs):
        ctx, cont = tuple(ctx), tuple(cont)
        g = groups.setdefault(ctx, ContextGroup(ctx))
        j = index.get((ctx, cont))
        if j is None:
            j = index[(ctx, cont)] = len(g.continuations)
            g.continuations.append(cont)
        g.requests.append((i, j))
    return [groups[k] for k in sorted(groups)]


def rolling_pairs(tokens: Sequence[int], prefix_token: int, max_length: int
                  ) -> list[tuple[list[int], list[int]]]:
    """lm-eval's disjoint rolling windows over a document (HFLM.loglikelihood_rolling): the first
    window predicts up to ``max_length`` tokens after the prefix token, each later window the
    next ones given the preceding tokens; every token is predicted exactly once."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window  # noqa: PLC0415

    return [make_disjoint_window(w) for w in get_rolling_token_windows(
        token_list=list(tokens), prefix_token=prefix_token, max_seq_len=max_length,
        context_len=1)]
