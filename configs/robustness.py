"""Robustness (paper Sec. 4): every WVS-7 question under 3 prompt styles x 5 option variants,
probed with the token, sequence and text methods.

  valueprobe run --config configs/robustness.py:smollm2-135m-instruct --workdir runs/robustness
  valueprobe run --config configs/robustness.py:qwen2.5-72b-instruct --workdir runs/rob-qwen72 \
      --config.run.mesh=fsdp=4,tensor=4        # TPU v5p-32 slice (see `valueprobe plan`)
  Small local variant (big_vision's "runlocal"): append ",runlocal" to the argument
  (5 questions, 2 samples).

Procedure: ",paper" (or --config.procedure=paper) runs the paper's released procedure instead of
ours (the default); flags combine in any order: `configs/robustness.py:MODEL,paper,runlocal`.
What each procedure sets is the table in valueprobe_jax/probing/procedure.py; it only supplies
defaults: the config file's own settings come next, and any --config.FIELD=VALUE wins over both
(`:MODEL,paper --config.probe.variants=baseline` keeps every paper default but the variants).
"""

from valueprobe_jax.experiments.schema import base_config, parse_config_arg


def get_config(arg: str = "smollm2-135m-instruct"):
    model, proc, flags = parse_config_arg(arg, "smollm2-135m-instruct")
    c = base_config("robustness", model, proc)
    if "runlocal" in flags:
        c.max_questions = 5
        c.probe.samples = 2
    return c
