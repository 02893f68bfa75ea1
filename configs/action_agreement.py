"""Value-action agreement (paper Sec. 5.2): the model rates both actions of up to 10 verified
scenarios per question on 1-10 with the paper's three rating templates (parsed from 20 generated
tokens and as the expectation over "1".."10"), next to the baseline value probes of the same
questions (3 styles, baseline variant) that the ratings are correlated with.

  valueprobe run --config configs/action_agreement.py:llama-3.1-8b-instruct --workdir runs/actions
  Small local variant: append ",runlocal" (3 questions, 2 scenarios each).
"""

from valueprobe_jax.experiments.schema import base_config


def get_config(arg: str = "smollm2-135m-instruct"):
    model, _, mode = arg.partition(",")
    c = base_config("action_agreement", model)
    c.probe.variants = ["baseline"]
    c.actions.enabled = True
    if mode == "runlocal":
        c.max_questions = 3
        c.actions.max_scenarios = 2
        c.probe.samples = 2
    return c
