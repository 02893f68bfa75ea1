"""Value-action agreement (paper Sec. 5.2): the model rates both actions of up to 10 verified
scenarios per question on 1-10 with the paper's three rating templates (parsed from 20 generated
tokens and as the expectation over "1".."10"), next to the value probes of the same questions
that the ratings are correlated with (3 styles; variant baseline, or baseline/reverse/num with
",paper").

  valueprobe run --config configs/action_agreement.py:llama-3.1-8b-instruct --workdir runs/actions
  The paper's procedure: append ",paper" (probing/procedure.py; see configs/robustness.py).
  Small local variant: append ",runlocal" (3 questions, 2 scenarios each).
"""

from valueprobe_jax.experiments.schema import base_config, parse_config_arg


def get_config(arg: str = "smollm2-135m-instruct"):
    model, proc, flags = parse_config_arg(arg, "smollm2-135m-instruct")
    c = base_config("action_agreement", model, proc)
    c.probe.variants = list(proc.action_variants)  # ours: baseline; paper: baseline, reverse, num
    c.actions.enabled = True
    if "runlocal" in flags:
        c.max_questions = 3
        c.actions.max_scenarios = 2
        c.probe.samples = 2
    return c
