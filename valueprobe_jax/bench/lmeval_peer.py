"""lm-evaluation-harness's HF backend (``lm_eval.models.huggingface.HFLM``, PyTorch) on the bench's
seq-method requests: the strongest peer ``valueprobe bench`` times ours against.

The requests arrive as token ids, exactly as our engine encodes them (``engine.requests.
encode_request``: the prompt, then each option's continuation), and go to HFLM's
``_loglikelihood_tokens``, the step ``HFLM.loglikelihood`` runs after its own tokenization, so
both sides score the same tokens. Each batch size is timed on all requests after a warm-up call
on one batch of them; the model is loaded once.

It runs as its own process (``python -m valueprobe_jax.bench.lmeval_peer IN.json OUT.json``) for
the reason given in ``hf_reference``: XLA's threads beside PyTorch's slow PyTorch several-fold.
Input: {"checkpoint": GGUF file or HF directory, "tokenizer": directory, "requests": [{key,
context: [ids], continuations: [[ids], ...]}], "batch_sizes": [1, 8, 16], "threads": n}.
Output: versions, per batch size the seconds and every option's log-likelihood, the best batch
size, and the tokens HFLM ran through the model.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from valueprobe_jax import io

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def flat_requests(requests: Sequence[dict]) -> list[tuple[tuple[str, str], list[int], list[int]]]:
    """One lm-eval token request ((key, option index), context ids, continuation ids) per
    option of every request, in order."""
    return [((r["key"], str(i)), list(r["context"]), list(c))
            for r in requests for i, c in enumerate(r["continuations"])]


def hflm_tokens(flat: Sequence[tuple[Any, list[int], list[int]]]) -> int:
    """Tokens HFLM runs through the model (padding aside): each distinct (context +
    continuation)[:-1] once, as its logits cache groups them."""
    return sum(map(len, {tuple(ctx + cont)[:-1] for _, ctx, cont in flat}))


def main(argv: list[str]) -> int:
    # torch and lm_eval are optional (the [bench] extra) and load only in this subprocess
    import lm_eval  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from lm_eval.models.huggingface import HFLM  # noqa: PLC0415

    from valueprobe_jax.models.hf_export import hf_model_dir  # noqa: PLC0415

    with open(argv[0], encoding="utf-8") as f:
        job = json.load(f)
    torch.set_num_threads(int(job.get("threads") or os.cpu_count() or 1))
    flat = flat_requests(job["requests"])
    sizes = [int(b) for b in job["batch_sizes"]]
    lm = HFLM(pretrained=str(hf_model_dir(job["checkpoint"])), tokenizer=job["tokenizer"],
              device="cpu", dtype="float32", batch_size=sizes[0])
    runs = []
    for bs in sizes:
        lm.batch_size_per_gpu = bs  # what HFLM's batch_size reads; no reload between sizes
        lm._loglikelihood_tokens(flat[:bs], disable_tqdm=True)  # warm-up: one batch
        t0 = time.perf_counter()
        out = lm._loglikelihood_tokens(flat, disable_tqdm=True)
        runs.append({"batch_size": bs, "seconds": time.perf_counter() - t0,
                     "loglik": [float(ll) for ll, _ in out]})
    best = min(runs, key=lambda r: r["seconds"])
    io.write_json(argv[1], {"lm_eval": lm_eval.__version__, "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "runs": runs,
                            "best_batch_size": best["batch_size"],
                            "tokens": hflm_tokens(flat)}, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
