"""Expressiveness by country prompting (paper Sec. 5.1): the 6 countries and no country, x 3
styles x 5 variants (",paper": the release's 5 countries, no Czech, x 3 variants). Alignment with WVS-7 human answers is computed by `valueprobe report` from
the human distributions (a licensed CSV under the data builder's manual_dir).

  valueprobe run --config configs/demographic.py:llama-3.1-8b-instruct --workdir runs/demographic
  The paper's procedure: append ",paper" (see configs/robustness.py).
  Small local variant: append ",runlocal" (3 questions, 2 countries, 2 samples).
"""

from valueprobe_jax.experiments.schema import base_config, parse_config_arg


def get_config(arg: str = "smollm2-135m-instruct"):
    model, proc, flags = parse_config_arg(arg, "smollm2-135m-instruct")
    c = base_config("demographic", model, proc)
    c.probe.countries = list(proc.countries)  # ours: 6 countries; paper: 5 (no Czech)
    if "runlocal" in flags:
        c.max_questions = 3
        c.probe.countries = list(proc.countries[:2])
        c.probe.samples = 2
    return c
