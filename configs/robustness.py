"""Robustness (paper Sec. 4): every WVS-7 question under 3 prompt styles x 5 option variants,
probed with the token, sequence and text methods.

  valueprobe run --config configs/robustness.py:smollm2-135m-instruct --workdir runs/robustness
  valueprobe run --config configs/robustness.py:qwen2.5-72b-instruct --workdir runs/rob-qwen72 \
      --config.run.mesh=fsdp=4,tensor=4        # TPU v5p-32 slice (see `valueprobe plan`)
  Small local variant (big_vision's "runlocal"): append ",runlocal" to the argument
  (5 questions, 2 samples).
"""

from valueprobe_jax.experiments.schema import base_config


def get_config(arg: str = "smollm2-135m-instruct"):
    model, _, mode = arg.partition(",")
    c = base_config("robustness", model)
    if mode == "runlocal":
        c.max_questions = 5
        c.probe.samples = 2
    return c
