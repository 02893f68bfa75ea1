"""Which questions a run probes: the paper's bank (mirror or pinned download) or a user's file,
optionally cut to the first N."""

from __future__ import annotations

import os

from valueprobe_jax.data.questions import Question, load_question_bank, load_questions_file
from valueprobe_jax.errors import InputError


def select_questions(*, data_dir: str | os.PathLike | None = None,
                     questions_file: str | os.PathLike | None = None,
                     max_questions: int = 0) -> list[Question]:
    """The bank (or ``questions_file``), first ``max_questions`` of it when > 0."""
    if max_questions < 0:
        raise InputError(f"max_questions={max_questions}: must be >= 0 (0 = all)")
    questions = (load_questions_file(questions_file) if questions_file
                 else load_question_bank(data_dir))
    return questions[:max_questions] if max_questions else questions
