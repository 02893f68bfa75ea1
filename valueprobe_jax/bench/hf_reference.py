"""The paper's probing procedure in plain Hugging Face PyTorch: the independent reference that
``valueprobe bench`` times against ours.

Scoring: one forward over the prompt for the label logits (bare "A" and " A" at the last
position), then one full forward over prompt + option per option, summing the log-probabilities
of the option tokens. Generation: ``model.generate(num_return_sequences=N)`` per prompt,
temperature 1, no top-k / top-p.

It runs as its own process (``python -m valueprobe_jax.bench.hf_reference IN.json OUT.json``) and
never runs JAX (``models.hf_export`` imports it, idle): in one process, XLA's CPU worker threads
and PyTorch's OpenMP threads compete for the cores, which slowed PyTorch by 10x and more on a
2-core machine. Input: {"model": path (GGUF file or HF directory), "tokenizer": directory,
"requests": [{key, prompt, continuations, labels}], "generation": {"prompts": n, "samples": N,
"max_new_tokens": m} or null, "threads": n}. Output: per-request numbers, the length of every forward, timings.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from valueprobe_jax import io

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load(model_path: str) -> Any:
    """The model in float32 from its transformers directory (a GGUF file is converted once by
    ``models.hf_export``, the same directory lm-eval's backend reads in the bench)."""
    # torch and transformers are optional (the main job needs neither) and load only in this
    # subprocess, after HF_HUB_OFFLINE is set above
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    from valueprobe_jax.models.hf_export import hf_model_dir  # noqa: PLC0415

    return AutoModelForCausalLM.from_pretrained(hf_model_dir(model_path), dtype=torch.float32).eval()


def _add_special(tokenizer: Any, text: str) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def score(model: Any, tokenizer: Any, requests: list[dict]) -> tuple[list[dict], list[int]]:
    """Per request {key, token_logits, token_logits_space, option_logprob, option_ntokens,
    n_prompt_tokens, boundary_split}; and the token count of every forward run."""
    import torch  # noqa: PLC0415 (optional: see load)

    out, lengths = [], []
    with torch.inference_mode():
        for req in requests:
            add = _add_special(tokenizer, req["prompt"])
            prompt = tokenizer(req["prompt"], add_special_tokens=add)["input_ids"]
            n = len(prompt)
            last = model(torch.tensor([prompt])).logits[0, -1]
            lengths.append(n)
            bare = [float(last[tokenizer(lab, add_special_tokens=False)["input_ids"][0]])
                    for lab in req["labels"]]
            space = [float(last[tokenizer(" " + lab, add_special_tokens=False)["input_ids"][0]])
                     for lab in req["labels"]]
            lls, ntok, split = [], [], False
            for cont in req["continuations"]:
                full = tokenizer(req["prompt"] + cont, add_special_tokens=add)["input_ids"]
                if full[:n] != prompt or len(full) <= n:
                    full = prompt + tokenizer(cont, add_special_tokens=False)["input_ids"]
                    split = True
                logits = model(torch.tensor([full])).logits[0]
                lengths.append(len(full))
                lsm = torch.log_softmax(logits[n - 1:-1].double(), dim=-1)
                lls.append(float(lsm.gather(1, torch.tensor(full[n:])[:, None]).sum()))
                ntok.append(len(full) - n)
            out.append({"key": req["key"], "token_logits": bare, "token_logits_space": space,
                        "option_logprob": lls, "option_ntokens": ntok, "n_prompt_tokens": n,
                        "boundary_split": split})
    return out, lengths


def generate(model: Any, tokenizer: Any, prompts: list[str], samples: int,
             max_new_tokens: int, seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """Generated lengths per prompt (up to and with EOS) and prompt lengths."""
    import torch  # noqa: PLC0415 (optional: see load)

    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    lengths, n_prompt = [], []
    with torch.inference_mode():
        for p in prompts:
            x = torch.tensor([tokenizer(p, add_special_tokens=_add_special(tokenizer, p))["input_ids"]])
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=True,
                                 temperature=1.0, top_k=0, top_p=1.0,
                                 num_return_sequences=samples, max_new_tokens=max_new_tokens,
                                 pad_token_id=eos, eos_token_id=eos)
            new = out[:, x.shape[1]:].tolist()
            lengths.append([row.index(eos) + 1 if eos in row else len(row) for row in new])
            n_prompt.append(int(x.shape[1]))
    return lengths, n_prompt


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    import torch  # noqa: PLC0415 (optional: see load)

    a = torch.randn(n, n, dtype=torch.float32)
    torch.mm(a, a)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, a)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


def main(argv: list[str]) -> int:
    import torch  # noqa: PLC0415 (optional: see load)
    from transformers import AutoTokenizer  # noqa: PLC0415 (optional: see load)

    with open(argv[0], encoding="utf-8") as f:
        job = json.load(f)
    torch.set_num_threads(int(job.get("threads") or os.cpu_count() or 1))
    result: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    peak_start = matmul_peak_gflops()
    model = load(job["model"])
    tokenizer = AutoTokenizer.from_pretrained(job["tokenizer"])
    requests = job["requests"]
    score(model, tokenizer, requests[:1])  # warm-up
    t0 = time.perf_counter()
    result["scores"], result["forward_lengths"] = score(model, tokenizer, requests)
    result["scoring_s"] = time.perf_counter() - t0
    gen = job.get("generation")
    if gen:
        prompts = [r["prompt"] for r in requests[:gen["prompts"]]]
        generate(model, tokenizer, prompts[:1], gen["samples"], 4)  # warm-up
        t0 = time.perf_counter()
        result["gen_lengths"], result["gen_prompt_lengths"] = generate(
            model, tokenizer, prompts, gen["samples"], gen["max_new_tokens"])
        result["generation_s"] = time.perf_counter() - t0
    result["matmul_peak_gflops"] = max(peak_start, matmul_peak_gflops())
    io.write_json(argv[1], result, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
