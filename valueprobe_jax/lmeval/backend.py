"""The lm-eval model ``valueprobe``: any lm-evaluation-harness task on the engine.

    valueprobe lm-eval run --model valueprobe \\
        --model_args model=smollm2-135m-instruct,dtype=float32,mesh=data:4/tensor:2 --tasks ...

``model_args``: ``model`` (or ``pretrained``): a registry name, HF directory, .gguf file or
converted (orbax) directory; ``dtype`` float32 | bfloat16; ``mesh`` a device mesh such as
``data:4/tensor:2`` (``/`` for the comma that lm-eval's ``k=v,k=v`` syntax reserves; in JSON
model_args ``"data=4,tensor=2"`` works as is); ``max_length`` (default: the model's positions
- 1), ``max_gen_toks`` (256), ``add_bos_token``, ``prefix_token_id`` (as in lm-eval's HF
backend), ``strategy`` (packed | prefix_cache | padded | naive), ``tokens_per_call`` (memory:
B x T of one scoring call), ``seed`` (sampling), ``check_greedy`` (default true).

``batch_size`` is accepted and ignored: requests are packed by the scorer, and a request's
numbers depend only on the set of requests lm-eval hands over, never on a batch size.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import lm_eval.models  # noqa: F401  the built-in names (hf, vllm, ...) stay registered
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (handle_stop_sequences, normalize_gen_kwargs,
                                  postprocess_generated_text)
from tqdm import tqdm

from valueprobe_jax.engine import STRATEGIES, Sampler, Scorer
from valueprobe_jax.errors import InputError
from valueprobe_jax.lmeval import generation, loglik
from valueprobe_jax.lmeval import requests as rq
from valueprobe_jax.parallel.sharding import param_shardings
from valueprobe_jax.parallel.sharding import make_mesh
from valueprobe_jax.models.checkpoints import load_model

log = logging.getLogger(__name__)

# lm-eval/HF model_args that have no meaning here but appear in copied command lines
_IGNORED = {"device", "max_batch_size", "trust_remote_code", "parallelize", "revision",
            "use_fast_tokenizer", "logits_cache"}


def parse_mesh(mesh: Any) -> Any:
    """``data:4/tensor:2`` (or a JSON object / "data=4,tensor=2") -> a spec for make_mesh."""
    if mesh is None or mesh == "":
        return None
    if isinstance(mesh, dict):
        return mesh
    text = str(mesh).strip()
    if text.startswith("{"):
        return json.loads(text)
    return text.replace("/", ",").replace(";", ",")


@register_model("valueprobe")
class ValueprobeLM(TemplateLM):
    """lm-eval's ``LM`` on valueprobe's packed scorer (log-likelihoods) and decode loop
    (generation). The context/continuation split is lm-eval's own (``TemplateLM``); the
    tokenizer rules around it are its HF backend's (``requests``)."""

    def __init__(self, model: str | None = None, pretrained: str | None = None,
                 dtype: str = "float32", mesh: Any = None, batch_size: Any = None,
                 max_length: int | None = None, max_gen_toks: int = 256,
                 add_bos_token: bool | None = None, prefix_token_id: int | None = None,
                 strategy: str = "packed", tokens_per_call: int = 4096, seed: int = 0,
                 check_greedy: bool = True, contexts_per_call: int = 512,
                 loaded: Any = None, **kwargs: Any):
        super().__init__()
        unknown = sorted(set(kwargs) - _IGNORED)
        if unknown:
            raise InputError(f"valueprobe model_args: unknown {unknown}")
        if strategy not in STRATEGIES:
            raise InputError(f"strategy {strategy!r}: choose from {', '.join(STRATEGIES)}")
        name = model or pretrained
        if loaded is None and not name:
            raise InputError("valueprobe model_args: model=NAME_OR_DIR is required")
        self.mesh_spec = parse_mesh(mesh)
        self._mesh = None
        if self.mesh_spec is not None:

            self._mesh = make_mesh(self.mesh_spec)
        if loaded is None:

            shardings = None
            if self._mesh is not None:

                shardings = lambda cfg: param_shardings(cfg, self._mesh)  # noqa: E731
            loaded = load_model(name, dtype=dtype, shardings=shardings)
        if loaded.tokenizer is None:
            raise InputError(f"model {name}: the checkpoint has no tokenizer files")
        self.loaded, self.model_name, self.dtype = loaded, name or loaded.name, dtype
        self.tokenizer = loaded.tokenizer
        self.cfg = loaded.cfg
        positions = int(self.cfg.max_position_embeddings)
        # a scored row holds the context and the whole continuation (lm-eval's input plus the
        # last, never-read token): max_length + 1 positions
        self._max_length = min(int(max_length or positions - 1), positions - 1)
        self._max_gen_toks = int(max_gen_toks)
        self.add_bos_token = add_bos_token
        self._prefix_token_id = rq.prefix_token_id(self.tokenizer, prefix_token_id)
        self.strategy, self.seed = strategy, int(seed)
        self.check_greedy, self.contexts_per_call = bool(check_greedy), int(contexts_per_call)
        self.batch_size_arg = batch_size  # recorded, never used
        self.scorer = Scorer(loaded, mesh=self._mesh, tokens_per_call=int(tokens_per_call))
        params = self.scorer.params
        self._greedy_ids = generation.IdPrompts(self.tokenizer, stop_at_eos=False)
        self._greedy = Sampler(self.cfg, params, self._greedy_ids, end_of_turn=(),
                               mesh=self._mesh)
        self._gen_ids = generation.IdPrompts(self.tokenizer)
        self._gen = Sampler(self.cfg, params, self._gen_ids, end_of_turn=(), mesh=self._mesh)
        self.timings = loglik.Timings()

    # ------------------------------------------------------------------ tokenization (HFLM's)

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        return self._prefix_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   left_truncate_len: int | None = None, **kwargs: Any) -> list[int]:
        ids = rq.tok_encode(self.tokenizer, string, add_special_tokens=add_special_tokens,
                            add_bos_token=self.add_bos_token,
                            bos_text=self.tokenizer.decode([self.prefix_token_id]))
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or self.model_name).replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        import jinja2  # noqa: PLC0415

        def render(history):
            return self.tokenizer.apply_chat_template(
                history, tokenize=False, add_generation_prompt=add_generation_prompt,
                continue_final_message=not add_generation_prompt)

        try:
            return render(chat_history)
        except jinja2.exceptions.TemplateError:  # as HFLM: a template without a system role
            return render([m for m in chat_history if m["role"] != "system"])

    def get_model_info(self) -> dict[str, Any]:
        return {"model": self.model_name, "dtype": self.dtype,
                "mesh": None if self._mesh is None else dict(self._mesh.shape),
                "strategy": self.strategy, "max_length": self.max_length,
                "backend": "valueprobe_jax"}

    # ------------------------------------------------------------------ the three request types

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any
                              ) -> list[tuple[float, bool]]:
        pairs = [rq.truncate_pair(ctx, cont, self.max_length) for _, ctx, cont in requests]
        bar = tqdm(total=len(pairs), disable=disable_tqdm, desc="valueprobe loglikelihood")
        res = loglik.score_pairs(self.scorer, self._greedy, self._greedy_ids, pairs,
                                 strategy=self.strategy, max_positions=self.max_length + 1,
                                 contexts_per_call=self.contexts_per_call,
                                 check_greedy=self.check_greedy, timings=self.timings,
                                 progress=bar.update)
        bar.close()
        for (key, _, _), r in zip(requests, res):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, r)
        return res

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False
                              ) -> list[float]:
        windows, owner = [], []
        for i, (text,) in enumerate(r.args for r in requests):
            for w in rq.rolling_pairs(self.tok_encode(text), self.prefix_token_id,
                                      self.max_length):
                windows.append(w)
                owner.append(i)
        scores = loglik.score_pairs(self.scorer, self._greedy, self._greedy_ids, windows,
                                    strategy=self.strategy, max_positions=self.max_length + 1,
                                    contexts_per_call=self.contexts_per_call, check_greedy=False,
                                    timings=self.timings)
        out = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, scores):
            out[i] += ll
        for r, ll in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, ll)
        return out

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(json.dumps(r.args[1], sort_keys=True, default=str), []).append(i)
        out: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="valueprobe generate_until")
        for key, idx in groups.items():
            kw = dict(normalize_gen_kwargs(requests[idx[0]].args[1], self.max_gen_toks))
            until = handle_stop_sequences(kw.pop("until", None), eos=eos)
            sp, _ = generation.sampling_params({**kw, "until": until}, self.seed)
            room = self.max_length + 1 - sp.max_new_tokens
            if room < 1:
                raise InputError(f"max_gen_toks {sp.max_new_tokens}: leaves no room for a "
                                 f"context in max_length {self.max_length}")
            contexts = []
            for i in idx:
                ids = rq.encode_generation_context(self.tokenizer, requests[i].args[0],
                                                   add_bos_token=self.add_bos_token)
                if len(ids) > room:
                    log.warning("generate_until: context of %d tokens left-truncated to %d",
                                len(ids), room)
                    ids = ids[-room:]
                contexts.append(ids)
            texts = generation.generate(self._gen, self._gen_ids, contexts,
                                        [f"{requests[i].args[0]}\x1f{key}" for i in idx], sp)
            for i, text in zip(idx, texts):
                out[i] = postprocess_generated_text(text, until, None)
                self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
            bar.update(len(idx))
        bar.close()
        return out
