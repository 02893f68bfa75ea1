"""Value-action dataset synthesis (the paper's Sec. 5.2 data, Table 5 prompts): a generator
writes scenes for each question's two opposite answers, they are parsed, checked and
de-duplicated, and a judge answers the paper's Q1-Q4 verification prompt for each kept scene.

  valueprobe synthesize --config configs/synthesis.py:qwen2.5-72b-instruct --workdir runs/synth
  valueprobe synthesize --config configs/synthesis.py:smollm2-135m-instruct --workdir runs/synth-s \
      --config.max_questions=2
  Output: DIR/scenarios.jsonl (the released file's format; load_scenarios(path=...) keeps rows
  with four Yes), DIR/report.json (what was kept and dropped, and why). Resumable per question.
  The judge defaults to the generator; set --config.verification.model=NAME for another one.
  Small local variant: append ",runlocal" (2 questions, one 160-token sample each, the reply
  primed with "Situation_1:", a 48-token verdict).

The scene prompt is the paper's Table 5 text from the data directory
(paper_text/table5_scene_generation_prompt.txt; --config.generation.prompt_file=FILE for another),
with our few-shot example in its "<Fewshot Examples>" slot; only when no data directory has it,
our reconstruction (valueprobe_jax/synthesis/prompt.py). report.json and the summary name the
prompt used. The verification prompt is the paper's file, verbatim.
"""

import ml_collections

from valueprobe_jax.errors import InputError


def get_config(arg: str = "smollm2-135m-instruct"):
    model, _, mode = arg.partition(",")
    c = ml_collections.ConfigDict()
    c.experiment = "synthesis"
    c.max_questions = 0  # 0 = all questions of the bank

    c.input = ml_collections.ConfigDict()
    c.input.data_dir = ""  # "" = VALUEPROBE_DATA_DIR, else download (pinned, checksummed)
    c.input.questions_file = ""  # a JSON list of {"id", "question", "options"} instead of the bank

    c.model = ml_collections.ConfigDict()
    c.model.name = model  # the generator: registry name or a local checkpoint directory
    c.model.dtype = "float32"

    c.generation = ml_collections.ConfigDict()
    c.generation.scenes_per_question = 10  # the paper: 10 situations per question
    c.generation.samples = 1  # replies per question (more replies, more candidates)
    c.generation.temperature = 0.7
    c.generation.top_k = 0
    c.generation.top_p = 0.95
    c.generation.max_new_tokens = 1024  # 10 scenes take about 600 tokens
    c.generation.seed = 0
    c.generation.prompt_file = ""  # "" = the data directory's Table 5 text, else the reconstruction
    # Table 5's limits: situations 10-30 words, actions 10-20. The maxima are enforced; the minima
    # are only stated (the released rows include 132 situations and 287 actions under 10 words)
    c.generation.min_situation_words = 10
    c.generation.max_situation_words = 30
    c.generation.min_action_words = 10
    c.generation.max_action_words = 20
    c.generation.dedup_threshold = 0.6  # content-word Jaccard at or above which scenes are copies
    c.generation.few_shot = True  # the prompt shows an example value with two scenes
    c.generation.prime_format = False  # start the reply with "Situation_1:" (helps small models)

    c.verification = ml_collections.ConfigDict()
    c.verification.enabled = True
    c.verification.model = ""  # the judge; "" = the generator
    c.verification.dtype = ""  # "" = model.dtype
    c.verification.max_new_tokens = 48  # {"Q1": "Yes", ...} is about 30 tokens

    c.run = ml_collections.ConfigDict()
    c.run.batch_questions = 4  # prompts per generation call
    c.run.batch_verify = 8  # scenes per verification call

    if mode == "runlocal":
        c.max_questions = 2
        c.generation.max_new_tokens = 160
        c.generation.prime_format = True
        c.run.batch_questions = 2
        c.run.batch_verify = 4
    elif mode:
        raise InputError(f"unknown mode {mode!r} (expected MODEL or MODEL,runlocal)")
    return c
