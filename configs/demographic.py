"""Expressiveness by country prompting (paper Sec. 5.1): the 6 countries and no country, x 3
styles x 5 variants. Alignment with WVS-7 human answers is computed by `valueprobe report` from
the human distributions (a licensed CSV under the data builder's manual_dir).

  valueprobe run --config configs/demographic.py:llama-3.1-8b-instruct --workdir runs/demographic
  Small local variant: append ",runlocal" (3 questions, 2 countries, 2 samples).
"""

from valueprobe_jax.experiments.schema import base_config
from valueprobe_jax.vocabulary import COUNTRIES


def get_config(arg: str = "smollm2-135m-instruct"):
    model, _, mode = arg.partition(",")
    c = base_config("demographic", model)
    c.probe.countries = list(COUNTRIES)
    if mode == "runlocal":
        c.max_questions = 3
        c.probe.countries = list(COUNTRIES[:2])
        c.probe.samples = 2
    return c
