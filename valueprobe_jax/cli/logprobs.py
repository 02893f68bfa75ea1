"""`valueprobe logprobs`: the top-k next tokens after a text, with ids and log-probabilities
(a quick look inside a model; --json for scripts)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from valueprobe_jax.errors import InputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("logprobs", help="top-k next-token log-probabilities after a text",
                              description=__doc__)
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="registry name, HF directory, .gguf file or converted directory")
    p.add_argument("--text", required=True, help="the context (with --chat: the user message)")
    p.add_argument("--chat", action="store_true",
                   help="render --text as the user turn of the chat template, with the "
                        "generation prompt")
    p.add_argument("--top-k", type=int, default=10, help="how many tokens to show (default 10)")
    p.add_argument("--json", action="store_true",
                   help='print a JSON list of {"token_id", "token", "logprob"}')
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.set_defaults(func=run)


def encode(tokenizer, text: str, chat: bool) -> list[int]:
    """Token ids of ``text``; with ``chat`` the text is the user message of the chat template."""
    if not chat:
        return list(tokenizer(text)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("--chat: this model's tokenizer has no chat template")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def run(args: argparse.Namespace) -> int:
    # jax and the model stack load only when the command runs (``valueprobe --help`` stays fast)
    from valueprobe_jax.engine.logprobs import next_token_logprobs  # noqa: PLC0415
    from valueprobe_jax.models.checkpoints import load_model  # noqa: PLC0415

    if args.top_k < 1:
        raise InputError(f"--top-k {args.top_k}: must be at least 1")
    if not args.text:
        raise InputError("--text: empty text")
    loaded = load_model(args.model, dtype=args.dtype)
    tok = loaded.tokenizer
    if tok is None:
        raise InputError(f"--model {args.model}: the checkpoint has no tokenizer files")
    ids = encode(tok, args.text, args.chat)
    if not ids:
        raise InputError("--text: tokenizes to nothing")
    lp = next_token_logprobs(loaded.cfg, loaded.params, ids)
    k = min(args.top_k, lp.shape[0])
    top = np.argsort(-lp, kind="stable")[:k]
    rows = [{"token_id": int(i), "token": tok.decode([int(i)]), "logprob": float(lp[i])}
            for i in top]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    print(f"{loaded.name}: {len(ids)} context tokens; top {k} next tokens")
    for r in rows:
        token = json.dumps(r["token"], ensure_ascii=False)
        print(f"{r['token_id']:>8d}  {r['logprob']:>10.4f}  {token}")
    return 0
