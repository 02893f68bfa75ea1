"""Bench: lm-eval's HF backend (HFLM, PyTorch) vs ``valueprobe`` on the same multiple-choice
log-likelihood requests, in one process, at one thread count.

    python -m valueprobe_jax.lmeval.bench --threads 1 --questions 48

Needs the ``[bench]`` extra (torch). The transformers directory HFLM reads is ``--hf-dir``, or
by default ``models.hf_export.hf_model_dir(--model)`` (a GGUF file is converted once, about a
minute, and cached; the directory ``valueprobe bench`` uses too).
Prints one JSON object: per backend the best of ``--repeats`` timed calls after a warm-up call
(compiles excluded), seconds per request, and tokens processed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys


def requests(n: int) -> list[tuple[str, str]]:
    """n questions x 4 choices: a few facts (one-token answers) and sums (digit answers, several
    tokens), as lm-eval's multiple_choice tasks phrase them."""
    facts = [("What color is the sky on a clear day?", ["blue", "green", "red", "black"]),
             ("What is the capital of France?", ["Berlin", "Paris", "Rome", "Madrid"]),
             ("How many legs does a spider have?", ["six", "four", "eight", "ten"]),
             ("Which animal says moo?", ["dog", "cat", "duck", "cow"])]
    out = []
    for i in range(n):
        if i < len(facts):
            q, choices = facts[i]
        else:
            x, y = 3 + (7 * i) % 17, 2 + (5 * i) % 19
            s = x + y
            q, choices = f"What is {x} plus {y}?", [str(s - 1), str(s), str(s + 10), str(s + 1)]
        out += [(f"Question: {q}\nAnswer:", f" {c}") for c in choices]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--hf-batch-sizes", default="1,8,16")
    p.add_argument("--hf-dir", help="transformers directory of --model (default: converted from "
                   "its checkpoint once and cached)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    args = p.parse_args(argv)
    if args.threads == 1 and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from valueprobe_jax.bench.machine import best_time
    from valueprobe_jax.lmeval.backend import ValueprobeLM
    from valueprobe_jax.models.hf_export import hf_model_dir

    torch.set_num_threads(args.threads)
    pairs = requests(args.questions)
    inst = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    report: dict = {"requests": len(pairs), "questions": args.questions, "threads": args.threads}

    hf_dir = pathlib.Path(args.hf_dir) if args.hf_dir else hf_model_dir(args.model)
    hf_rows = []
    for bs in (int(b) for b in args.hf_batch_sizes.split(",")):
        hf = HFLM(pretrained=str(hf_dir), dtype="float32", device="cpu", batch_size=bs)
        s = best_time(lambda: hf.loglikelihood(inst, disable_tqdm=True), args.repeats)
        hf_rows.append({"batch_size": bs, "seconds": round(s, 3),
                        "ms_per_request": round(1e3 * s / len(pairs), 2)})
    # HFLM runs each distinct (context + continuation)[:-1] once (its one-token logits cache)
    seen = set()
    for ctx, cont in pairs:
        c, k = hf._encode_pair(ctx, cont)
        seen.add(tuple(c + k)[:-1])
    report["hf"] = {"runs": hf_rows, "tokens_processed": sum(map(len, seen))}

    ours = ValueprobeLM(model=args.model)
    before = dict(ours.scorer.stats.as_dict())
    s = best_time(lambda: ours.loglikelihood(inst, disable_tqdm=True), args.repeats)
    after = ours.scorer.stats.as_dict()
    calls = 1 + args.repeats
    report["valueprobe"] = {
        "seconds": round(s, 3), "ms_per_request": round(1e3 * s / len(pairs), 2),
        "tokens_processed_per_call": (after["tokens_processed"] - before["tokens_processed"]) // calls,
        "tokens_real_per_call": (after["tokens_real"] - before["tokens_real"]) // calls}
    ours.check_greedy = False  # the scorer alone (is_greedy then reads False)
    s2 = best_time(lambda: ours.loglikelihood(inst, disable_tqdm=True), args.repeats)
    report["valueprobe_without_greedy_check"] = {"seconds": round(s2, 3),
                                                 "ms_per_request": round(1e3 * s2 / len(pairs), 2)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
