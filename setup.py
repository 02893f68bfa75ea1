"""valueprobe_jax: probing LLM value orientations with JAX/Flax (EMNLP 2025 paper, extended)."""

from setuptools import find_packages, setup

BENCH = ["torch==2.13.0", "accelerate>=1.0", "lm_eval==0.4.13"]

setup(
    name="valueprobe_jax",
    version="0.1.0",
    description="Value probing of LLMs (token / sequence / text methods), robustness and expressiveness, in JAX/Flax",
    python_requires=">=3.11",
    # analysis/ sits at the top level (the design card's layout) but installs as
    # valueprobe_jax.analysis, not as a top-level package named `analysis`.
    packages=find_packages(include=["valueprobe_jax", "valueprobe_jax.*"]) + ["valueprobe_jax.analysis"],
    package_dir={"valueprobe_jax.analysis": "analysis"},
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "numpy>=2.0",
        "ml_dtypes>=0.5",  # bfloat16 in numpy (safetensors weights read without widening)
        "scipy>=1.13",
        "transformers>=5.0",  # tokenizers and chat templates
        "jinja2>=3.1",  # chat templates are rendered with it (prompts.py); torch brought it before
        "safetensors>=0.4",  # HF checkpoints without PyTorch
        "gguf>=0.17",  # the packaged SmolLM2 weights
        "orbax-checkpoint>=0.12.8",  # v1 partial save + finalize: convert writes one parameter at a time
        "etils[epath]>=1.5",  # io.py: one path API for local disks and buckets (gs://)
        "ml-collections>=1.0",
        "tensorflow-datasets>=4.9.8",  # data builders (array_record, no TensorFlow)
        "array_record>=0.7",
        "pyarrow>=15",
        "matplotlib>=3.8",
        "tqdm>=4.66",
    ],
    extras_require={
        # `valueprobe bench`'s PyTorch peers, each run in its own process: the paper's procedure
        # in transformers (torch) and lm-eval's HF backend (HFLM: torch, accelerate, lm_eval).
        # torch: the CPU build (pip install torch==2.13.0); pins in constraints.txt.
        "bench": BENCH,
        # the test extra covers the bench's peers: parity tests against transformers, and
        # tests/test_lmeval.py / test_bench_lmeval.py against lm-eval's own HF backend in CI
        "test": ["pytest>=8", *BENCH],
        # `valueprobe lm-eval ...` / `--model valueprobe`: any lm-evaluation-harness task on our
        # engine (valueprobe_jax/lmeval; torch-free).
        "lmeval": ["lm_eval==0.4.13"],
        "tpu": ["jax[tpu]>=0.10"],
        "cuda": ["jax[cuda12]>=0.10"],
    },
    entry_points={"console_scripts": ["valueprobe=valueprobe_jax.cli:main"]},
)
