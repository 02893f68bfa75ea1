"""Decoding for lm-eval through the engine's ``Sampler``: ``generate_until`` and the greedy
tokens behind ``is_greedy``.

The Sampler takes prompt *text* and tokenizes it itself, while lm-eval fixes the token ids (its
special-token rule, left truncation, the prefix token of an empty context). ``IdPrompts`` hands
the Sampler those exact ids: a tokenizer adapter whose ``encode`` maps a registered placeholder
string to its ids and passes everything else to the real tokenizer. (An engine entry taking
token ids, e.g. ``Sampler.generate_ids``, would make this adapter unnecessary.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from valueprobe_jax.engine import Sampler, SamplingParams
from valueprobe_jax.errors import InputError


class IdPrompts:
    """A tokenizer adapter for the Sampler: ``encode(key)`` of a registered key returns its ids.

    ``stop_at_eos=False`` hides the EOS id, so a sample runs to ``max_new_tokens`` (the greedy
    check must follow a continuation past an EOS token inside it)."""

    def __init__(self, tokenizer: Any, *, stop_at_eos: bool = True):
        self._tok = tokenizer
        self._ids: dict[str, list[int]] = {}
        self.eos_token_id = getattr(tokenizer, "eos_token_id", None) if stop_at_eos else None

    def register(self, ids: Sequence[int]) -> str:
        key = f"\x00ids:{len(self._ids)}"
        self._ids[key] = list(ids)
        return key

    def clear(self) -> None:
        self._ids.clear()

    def encode(self, text: str, **kw: Any) -> list[int]:
        ids = self._ids.get(text)
        return list(ids) if ids is not None else self._tok.encode(text, **kw)

    def __getattr__(self, name: str) -> Any:  # decode, convert_ids_to_tokens, ...
        return getattr(self._tok, name)


def _bucket(n: int) -> int:
    """Decode lengths in powers of two (the decode loop compiles once per length)."""
    return 1 << max(n - 1, 0).bit_length()


def greedy_tokens(sampler: Sampler, adapter: IdPrompts, contexts: Sequence[Sequence[int]],
                  lengths: Sequence[int], max_positions: int) -> list[tuple[int, ...]]:
    """The greedy (argmax) continuation of each context, at least ``lengths[i]`` tokens long
    (fewer only where the model's positions end). A continuation is greedy exactly when it is
    a prefix of this: every token is then the argmax given the context and the tokens before it,
    which is lm-eval's ``is_greedy``."""
    out: list[tuple[int, ...]] = [()] * len(contexts)
    by_len: dict[int, list[int]] = {}
    for i, (ctx, n) in enumerate(zip(contexts, lengths)):
        if n > 0:
            m = min(_bucket(n), max_positions - len(ctx))
            by_len.setdefault(m, []).append(i)
    for m, idx in sorted(by_len.items()):
        if m < 1:
            continue
        keys = [adapter.register(contexts[i]) for i in idx]
        try:
            gens = sampler.generate(keys, [f"greedy/{i}" for i in idx],
                                    SamplingParams(temperature=0.0, max_new_tokens=m,
                                                   num_samples=1))
        finally:
            adapter.clear()
        for i, g in zip(idx, gens):
            out[i] = tuple(g[0].token_ids)
    return out


# generation kwargs the decode loop honours; anything else is refused rather than ignored
_KNOWN = {"until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p"}


def sampling_params(kwargs: dict[str, Any], seed: int) -> tuple[SamplingParams, list[str]]:
    """lm-eval's normalized generation kwargs -> (SamplingParams, stop strings).

    ``num_beams=1`` and ``top_k=None`` style no-ops are accepted; other HF generate options
    (beam search, repetition penalty, ...) raise instead of being silently ignored."""
    kw = dict(kwargs)
    if kw.pop("num_beams", 1) not in (1, None):
        raise InputError("generate_until: beam search (num_beams > 1) is not supported")
    unknown = sorted(k for k, v in kw.items() if k not in _KNOWN and v is not None)
    if unknown:
        raise InputError(f"generate_until: unsupported generation kwargs {unknown} "
                         f"(supported: {sorted(_KNOWN | {'num_beams'})})")
    temperature = float(kw.get("temperature") or 0.0) if kw.get("do_sample") else 0.0
    sp = SamplingParams(temperature=temperature, top_k=int(kw.get("top_k") or 0),
                        top_p=float(kw.get("top_p") or 1.0),
                        max_new_tokens=int(kw["max_gen_toks"]), num_samples=1, seed=seed)
    return sp, list(kw.get("until") or [])


def generate(sampler: Sampler, adapter: IdPrompts, contexts: Sequence[Sequence[int]],
             keys: Sequence[str], sp: SamplingParams) -> list[str]:
    """One continuation per context (text without the stop token, special tokens skipped, as
    HFLM decodes); stop strings are cut by the caller."""
    prompts = [adapter.register(c) for c in contexts]
    try:
        gens = sampler.generate(prompts, list(keys), sp)
    finally:
        adapter.clear()
    return [g[0].text for g in gens]
