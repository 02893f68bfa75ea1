"""The chat model synthesis talks to: a loaded checkpoint that renders conversations the way its
registry entry asks and generates with one sampler per batch width."""

from __future__ import annotations

from typing import Any, Sequence

from valueprobe_jax.engine import Sampler
from valueprobe_jax.errors import InputError
from valueprobe_jax.probing.prompts import Prompt, render


class ChatModel:
    """A loaded model with the rendering its registry entry asks for and one sampler per batch
    width (the sampler's jitted shapes depend on it). ``date_string`` (YYYY-MM-DD): the date a
    dated chat template writes (None: today), pinned by the run so a resume renders the same
    prompts."""

    def __init__(self, model: Any, date_string: str | None = None):
        if model.tokenizer is None:
            raise InputError(f"model {model.name}: its checkpoint has no tokenizer")
        self.model = model
        spec = model.spec
        has_template = bool(getattr(model.tokenizer, "chat_template", None))
        self.instruct = spec.uses_chat_template(has_template) if spec is not None else has_template
        if self.instruct and not has_template:
            raise InputError(f"model {model.name}: registered as a chat model but its tokenizer "
                             "has no chat template")
        self.system_role = spec.system_role if spec is not None else None
        self.date_string = date_string
        self._samplers: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return self.model.name

    def render(self, messages: Sequence[dict[str, str]], assistant_prefix: str = "") -> str:
        """Generation-ready text (prompts.render: chat template, or plain joined text)."""

        msgs = [dict(m) for m in messages]
        if assistant_prefix:
            msgs.append({"role": "assistant", "content": assistant_prefix})
        prompt = Prompt(qid="", style="synthesis", variant="", country=None, messages=tuple(msgs),
                        labels=(), display_order=(), option_texts_displayed=(),
                        assistant_prefix=assistant_prefix or None)
        return render(prompt, self.model.tokenizer, instruct=self.instruct,
                      system_role=self.system_role, date_string=self.date_string)

    def generate(self, texts: Sequence[str], keys: Sequence[str], params: Any,
                 max_batch: int) -> list[list[Any]]:

        if max_batch not in self._samplers:
            m = self.model
            self._samplers[max_batch] = Sampler(m.cfg, m.params, m.tokenizer, max_batch=max_batch)
        return self._samplers[max_batch].generate(list(texts), list(keys), params)
