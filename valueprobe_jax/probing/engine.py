"""The probing engine end to end: prompts -> packed scoring and sampling -> parsed answers ->
the three value representations -> result rows (see ``results.SCHEMA``), and action ratings.

This module wires the parts together and owns no model math: the engine's ``Scorer`` gives label
logits and option log-likelihoods, its ``Sampler`` gives generations, ``parsing`` reads labels
from them and ``representations`` turns the raw numbers into distributions in canonical order.

The procedure's engine-side choices (probing/procedure.py) arrive as ProbeSettings fields and
leave here as ``EngineOptions`` (the Scorer's label lookup and boundary rule) and
``SamplingSpec``s (text probes, ratings: the paper's are resolved against the checkpoint's
generation_config.json and run the engine's "paper" processing, repetition penalty included).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from valueprobe_jax.models.generation_config import GenerationConfig
from valueprobe_jax.probing import parsing, representations
from valueprobe_jax.probing.procedure import check_engine_choices
from valueprobe_jax.probing.ratings import rating_messages
from valueprobe_jax.models.checkpoints import LoadedModel
from valueprobe_jax.data.questions import Question
from valueprobe_jax.data.scenarios import Scenario
from valueprobe_jax.errors import InputError
from valueprobe_jax.engine import STRATEGIES, Sampler, SamplingParams, Scorer, ScoreRequest
from valueprobe_jax.engine.shared_prefill import (SHARED_PREFILL, same_prompt_ids,
                                                  score_and_generate)
from valueprobe_jax.probing.prompts import (Prompt, build_prompt, chat_template_kwargs,
                                            option_continuations, parse_date, render)
from valueprobe_jax.probing.work import probe_cells
from valueprobe_jax.vocabulary import (METHODS, PARSE_MODES, Method, ParseMode, Style, Variant,
                                     check_choice, check_choices)


# the scorer's strategies, and shared_prefill: one prefill per prompt for all three methods
PROBE_STRATEGIES: tuple[str, ...] = ("auto", SHARED_PREFILL) + STRATEGIES


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """How to probe (the ``probe`` and ``actions`` sections of a sweep config)."""

    methods: tuple[Method, ...] = METHODS
    samples: int = 10
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    shuffle_seed: int = 0
    parse_mode: ParseMode = "label_aware"  # or "paper" (the released code's rules)
    # "auto": shared_prefill when the text method is on, else prefix_cache when the prompts
    # share a long prefix, else packed (ProbeEngine.probe_strategy)
    strategy: str = "auto"
    rating_max_new_tokens: int = 20
    rating_samples: int = 1
    rating_temperature: float = 0.0
    # the procedure's engine-side choices (probing/procedure.py; defaults: ours)
    label_lookup: str = "tokenize"  # "tokenize" (ours) | "vocab" (the paper's convert_tokens_to_ids)
    boundary: str = "retokenize"  # "retokenize" (ours) | "slice" (the paper's)
    sampler: str = "plain"  # "plain": the fields above | "generation_config": the checkpoint's
    rating_sampler: str = "greedy"  # "greedy": rating_temperature | "generation_config"
    rating_parse_mode: str = "strict"  # "strict" | "paper" (parsing.parse_rating)
    date_string: str = ""  # "YYYY-MM-DD" a dated chat template writes; "" = the template's own

    def __post_init__(self) -> None:
        check_choices("methods", self.methods, METHODS)
        check_choice("strategy", self.strategy, PROBE_STRATEGIES)
        check_choice("parse mode", self.parse_mode, PARSE_MODES)
        check_engine_choices(self.label_lookup, self.boundary, self.sampler,
                             self.rating_sampler, self.rating_parse_mode)
        if self.date_string:
            parse_date(self.date_string)
        if "text" in self.methods and self.samples < 1:
            raise InputError(f"samples={self.samples}: the text method needs at least 1 sample")

    @classmethod
    def from_config(cls, config: Any) -> "ProbeSettings":
        p, a = config.probe, config.actions
        return cls(methods=tuple(p.methods), samples=p.samples, temperature=p.temperature,
                   top_k=p.top_k, top_p=p.top_p, max_new_tokens=p.max_new_tokens, seed=p.seed,
                   shuffle_seed=p.shuffle_seed, parse_mode=p.parse_mode,
                   strategy=config.model.strategy, rating_max_new_tokens=a.max_new_tokens,
                   rating_samples=a.samples, rating_temperature=a.temperature,
                   label_lookup=p.label_lookup, boundary=p.boundary, sampler=p.sampler,
                   rating_sampler=a.sampler, rating_parse_mode=a.parse_mode,
                   date_string=p.date_string)


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """How the scorer reads labels and option continuations (for ``Scorer``).

    label_lookup: "tokenize" | "vocab" (engine.labels.label_token_ids' ``lookup``).
    boundary: "retokenize" | "slice" — where the tokenizer merges prompt and continuation
    (":\n"), "retokenize" scores the continuation tokenized alone after the prompt's tokens;
    "slice" tokenizes prompt + continuation as one text and scores the tokens after the first
    len(tokenize(prompt)) (the merged token stays in the context; n tokens = len(full) - len(prompt)).
    """

    label_lookup: str = "tokenize"
    boundary: str = "retokenize"


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """One kind of generation, fully resolved (what the sampler needs).

    temperature 0 = greedy; top_k 0 / top_p 1.0 = off; repetition_penalty 1.0 = off (else
    transformers' RepetitionPenaltyLogitsProcessor over prompt + generated ids, applied before
    temperature, top-k, top-p: engine/processors.paper_logits); stop_token_ids: the ids that end
    a sample besides the tokenizer's EOS, with ``default_end_of_turn`` saying whether the
    sampler's usual end-of-turn markers stop too (plain) or only these ids (generation_config:
    its eos list). ``source`` says where the numbers came from (for logs and reports).
    """

    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    max_new_tokens: int
    num_samples: int
    seed: int
    stop_token_ids: tuple[int, ...] = ()
    default_end_of_turn: bool = True
    source: str = "config"
    processing: str = "ours"  # "paper": transformers 4.45's processors (engine.sampling)

    def params(self) -> SamplingParams:
        """The engine's SamplingParams (everything but the stop ids, which the sampler takes)."""
        return SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, num_samples=self.num_samples,
                              seed=self.seed, repetition_penalty=self.repetition_penalty,
                              processing=self.processing)


def text_sampling(settings: ProbeSettings, gc: GenerationConfig) -> SamplingSpec:
    """The text method's sampling: ``plain`` from the settings; ``generation_config`` as the
    paper's ``generate(do_sample=True, temperature=1.0, max_new_tokens=64)`` with top_k, top_p,
    repetition_penalty and eos ids from the checkpoint's generation config."""
    s = settings
    if s.sampler == "plain":
        return SamplingSpec(s.temperature, s.top_k, s.top_p, 1.0, s.max_new_tokens, s.samples,
                            s.seed)
    return SamplingSpec(1.0, gc.top_k, gc.top_p, gc.repetition_penalty, s.max_new_tokens,
                        s.samples, s.seed, tuple(gc.eos_token_ids), False,
                        gc.source or "transformers 4.45 defaults", "paper")


def rating_sampling(settings: ProbeSettings, gc: GenerationConfig) -> SamplingSpec:
    """The ratings' decoding: ``greedy`` (ours: rating_temperature, default 0); or
    ``generation_config``, the paper's ``pipeline("text-generation", max_new_tokens=20)``:
    sampled with the checkpoint's temperature / top_k / top_p / repetition_penalty when it sets
    do_sample, greedy otherwise, stopping at its eos ids."""
    s = settings
    if s.rating_sampler == "greedy":
        return SamplingSpec(s.rating_temperature, 0, 1.0, 1.0, s.rating_max_new_tokens,
                            s.rating_samples, s.seed)
    where = gc.source or "transformers 4.45 defaults"
    if not gc.do_sample:
        return SamplingSpec(0.0, 0, 1.0, gc.repetition_penalty, s.rating_max_new_tokens,
                            s.rating_samples, s.seed, tuple(gc.eos_token_ids), False, where,
                            "paper")
    return SamplingSpec(gc.temperature, gc.top_k, gc.top_p, gc.repetition_penalty,
                        s.rating_max_new_tokens, s.rating_samples, s.seed,
                        tuple(gc.eos_token_ids), False, where, "paper")


@dataclasses.dataclass(frozen=True)
class ProbeRequest:
    """One value probe to run: a prompt and the row key it is stored under."""

    key: str
    prompt: Prompt
    experiment: str


@dataclasses.dataclass(frozen=True)
class RatingRequest:
    """One action rating to run."""

    key: str
    qid: str
    scenario: Scenario
    action: str  # "A" | "B"
    template: int


def uses_chat_template(model: LoadedModel) -> bool:
    """Whether a model's prompts go through its tokenizer's chat template: the registry's choice
    (``ModelSpec.uses_chat_template``: e.g. falcon-7b-instruct only when its tokenizer has one),
    or, for an unregistered checkpoint, whether its tokenizer has one."""
    has_template = bool(getattr(model.tokenizer, "chat_template", None))
    spec = model.spec
    instruct = spec.uses_chat_template(has_template) if spec is not None else has_template
    if instruct and not has_template:
        raise InputError(f"model {model.name}: registered as a chat model but its tokenizer "
                         f"has no chat template")
    return instruct


class ProbeEngine:
    """Holds one loaded model with its scorer and sampler (jitted functions and cached prompt
    prefixes are reused across every call of a sweep)."""

    def __init__(self, model: LoadedModel, settings: ProbeSettings, *, mesh: Any = None):
        if model.tokenizer is None:
            raise InputError(f"model {model.name}: its checkpoint has no tokenizer")
        self.model, self.settings, self.mesh = model, settings, mesh
        spec = model.spec
        self.instruct = uses_chat_template(model)
        self.system_role = spec.system_role if spec is not None else None
        # plain-text instruct models (no chat template) end an answer with their EOS text
        self.end_of_turn = spec.end_of_turn if (spec is not None and not self.instruct) else None
        gc = getattr(model, "generation_config", None) or GenerationConfig()
        self.engine_options = EngineOptions(settings.label_lookup, settings.boundary)
        self.text_sampling = text_sampling(settings, gc)
        self.rating_sampling = rating_sampling(settings, gc)
        self.template_kwargs = chat_template_kwargs(model.tokenizer, settings.date_string)
        self.scorer = Scorer(model, mesh=mesh, label_lookup=self.engine_options.label_lookup,
                             boundary=self.engine_options.boundary)
        self._sampler: Sampler | None = None  # the text method's
        self._samplers: dict[tuple[tuple[int, ...], bool], Sampler] = {}  # other stop sets
        self.last_strategy: str | None = None  # how the last ``probe`` scored (for logs, tests)

    @staticmethod
    def _stops(spec: SamplingSpec) -> tuple[tuple[int, ...], bool]:
        return spec.stop_token_ids, spec.default_end_of_turn

    def _new_sampler(self, spec: SamplingSpec) -> Sampler:
        # the paper's stop list is the generation config's eos ids alone; without one (a GGUF)
        # it is the tokenizer's EOS, as transformers derives it from the model config
        return Sampler(self.model.cfg, self.model.params, self.model.tokenizer, mesh=self.mesh,
                       stop_token_ids=spec.stop_token_ids or None,
                       end_of_turn=None if spec.default_end_of_turn else (),
                       always_stop_at_eos=spec.default_end_of_turn or not spec.stop_token_ids)

    @property
    def sampler(self) -> Sampler:
        """The text method's sampler (stopping where ``text_sampling`` says)."""
        if self._sampler is None:
            self._sampler = self._new_sampler(self.text_sampling)
        return self._sampler

    def sampler_for(self, spec: SamplingSpec) -> Sampler:
        """A sampler stopping where ``spec`` says: the text method's when the stops agree (the
        usual case: one set of compiled functions), else one per distinct stop set."""
        key = self._stops(spec)
        if key == self._stops(self.text_sampling):
            return self.sampler
        if key not in self._samplers:
            self._samplers[key] = self._new_sampler(spec)
        return self._samplers[key]

    # ------------------------------------------------------------------ value probes

    def pick_strategy(self, prompts: Sequence[str]) -> str:
        """The scorer's strategy: the configured one; for "auto" (and for shared_prefill's
        fallback), prefix_cache when some prompts share a prefix of at least the scorer's
        ``min_prefix`` tokens (system instruction, one-shot example, chat template header — the
        scorer groups prompts by shared prefix itself), packed otherwise."""
        if self.settings.strategy in STRATEGIES:
            return self.settings.strategy
        ordered = sorted(prompts)
        tok = self.model.tokenizer
        for a, b in zip(ordered, ordered[1:]):
            shared = os.path.commonprefix([a, b])
            if len(tok.encode(shared, add_special_tokens=False)) - 1 >= self.scorer.min_prefix:
                return "prefix_cache"
        return "packed"

    @property
    def shares_prefill(self) -> bool:
        """Whether ``probe`` scores from the sampler's prefill (``engine.shared_prefill``):
        strategy shared_prefill, or "auto" with the text method on (its prompts are prefilled
        for sampling anyway, so token and seq cost no prompt tokens of their own)."""
        s = self.settings
        return s.strategy == SHARED_PREFILL or (s.strategy == "auto" and "text" in s.methods)

    def render(self, prompt: Prompt) -> tuple[str, list[str]]:
        """Generation-ready text and the per-option continuations the seq method scores."""
        tok = self.model.tokenizer
        date = self.settings.date_string or None
        text = render(prompt, tok, instruct=self.instruct, system_role=self.system_role,
                      date_string=date)
        conts = option_continuations(prompt, tok, instruct=self.instruct,
                                     system_role=self.system_role, end_of_turn=self.end_of_turn,
                                     date_string=date)
        return text, conts

    def probe(self, requests: Sequence[ProbeRequest]) -> list[dict[str, Any]]:
        """One result row per request (all methods of the settings)."""
        s = self.settings
        if not requests:
            return []
        rendered = [self.render(r.prompt) for r in requests]
        self.scorer.forget_prefixes()  # a call's numbers must not depend on earlier calls
        texts = [t for t, _ in rendered]
        # sample keys name the prompt, not the experiment: the same prompt gets the same
        # samples in every sweep that contains it
        keys = [r.prompt.key for r in requests]
        sp = self.text_sampling.params() if "text" in s.methods else None
        scored = generations = None
        if "token" in s.methods or "seq" in s.methods:
            reqs = [ScoreRequest(r.key, text, conts, list(r.prompt.labels))
                    for r, (text, conts) in zip(requests, rendered)]
            shared = self._score_shared(reqs, keys, sp) if self.shares_prefill else None
            if shared is not None:
                self.last_strategy = SHARED_PREFILL
                scored, generations = shared
            else:
                self.last_strategy = self.pick_strategy(texts)
                scored = self.scorer.score(reqs, strategy=self.last_strategy)
        if sp is not None and generations is None:
            generations = self.sampler.generate(texts, keys, sp)
        rows = []
        for i, r in enumerate(requests):
            p = r.prompt
            k = len(p.labels)
            row: dict[str, Any] = {
                "key": r.key, "model": self.model.name, "experiment": r.experiment,
                "style": p.style, "variant": p.variant, "country": p.country, "qid": p.qid,
                "labels": list(p.labels), "display_order": list(p.display_order), "seed": s.seed,
                "n_prompt_tokens": None, "date_string": s.date_string or None,
            }
            if scored is not None:
                res = scored[i]
                row.update(
                    token_logits=res.token_logits.tolist(),
                    token_logits_space=res.token_logits_space.tolist(),
                    label_multi_token=[bool(a or b) for a, b in res.label_multi_token],
                    option_logprob=res.option_logprob.tolist(),
                    option_ntokens=[int(n) for n in res.option_ntokens],
                    n_prompt_tokens=int(res.n_prompt_tokens),
                    boundary_split=bool(res.boundary_split),
                )
                if "token" in s.methods:
                    row["p_token"] = representations.p_token(
                        res.token_logits, res.token_logits_space, p.display_order).tolist()
                if "seq" in s.methods:
                    row["p_seq"] = representations.p_seq(
                        res.option_logprob, res.option_ntokens, p.display_order).tolist()
            if generations is not None:
                texts = [g.text for g in generations[i]]
                parsed = [parsing.parse_canonical(t, p.labels, p.option_texts_displayed,
                                                  p.display_order, mode=s.parse_mode) for t in texts]
                row.update(generations=texts, parsed=parsed,
                           p_text=representations.p_text(parsed, k).tolist())
            rows.append(row)
        return rows

    def _score_shared(self, reqs: list[ScoreRequest], keys: list[str],
                      sp: SamplingParams | None) -> tuple[list, list | None] | None:
        """Scores (and samples, with ``sp``) from one prefill per prompt; None where the
        scorer's prompt ids differ from the sampler's (a BOS rule), to score apart instead."""
        encoded = self.scorer.encode(reqs)
        ids = self.sampler.encode([r.prompt for r in reqs], keys, sp.max_new_tokens if sp else 0)
        if not same_prompt_ids(encoded, ids):
            return None
        return score_and_generate(self.scorer, self.sampler, encoded, ids, keys, sp)

    def probe_in_chunks(self, requests: Sequence[ProbeRequest], *, chunk_size: int = 32,
                        progress: bool = True) -> list[dict[str, Any]]:
        """``probe`` over chunks of ``chunk_size`` prompts (the sampler's call size) with a
        progress bar (prompts probed, text samples drawn, ETA); ``progress=False`` is silent."""
        from tqdm import tqdm

        samples = self.settings.samples if "text" in self.settings.methods else 0
        rows: list[dict[str, Any]] = []
        with tqdm(total=len(requests), unit="prompt", desc="probe", disable=not progress,
                  smoothing=0.1) as bar:
            for start in range(0, len(requests), chunk_size):
                chunk = requests[start:start + chunk_size]
                rows.extend(self.probe(chunk))
                bar.update(len(chunk))
                if samples:
                    bar.set_postfix(samples=len(rows) * samples, refresh=False)
        return rows

    # ------------------------------------------------------------------ action ratings

    def render_rating(self, r: RatingRequest) -> str:
        sc = r.scenario
        action = sc.action_a if r.action == "A" else sc.action_b
        messages = rating_messages(sc.situation, action, r.template)
        tok = self.model.tokenizer
        if self.instruct:
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                           **self.template_kwargs)
        return "\n".join(m["content"] for m in messages)

    def rate(self, requests: Sequence[RatingRequest], experiment: str = "action_agreement"
             ) -> list[dict[str, Any]]:
        """One row per rating request: the rating parsed from generated text and the expected
        rating over the next-token distribution of "1".."10"."""
        if not requests:
            return []
        s = self.settings
        texts = [self.render_rating(r) for r in requests]
        self.scorer.forget_prefixes()
        expected = self.scorer.rate([(r.key, t) for r, t in zip(requests, texts)],
                                    strategy=self.pick_strategy(texts))
        gens = self.sampler_for(self.rating_sampling).generate(
            texts, [r.key for r in requests], self.rating_sampling.params())
        rows = []
        for r, e, g in zip(requests, expected, gens):
            gen_texts = [x.text for x in g]
            rows.append({
                "key": r.key, "model": self.model.name, "experiment": experiment, "qid": r.qid,
                "scenario_id": r.scenario.id, "action": r.action, "template": r.template,
                "generations": gen_texts,
                "rating_text": [parsing.parse_rating(t, mode=s.rating_parse_mode)
                                for t in gen_texts],
                "rating_expected": float(e.expected), "rating_probs": np.asarray(e.probs).tolist(),
                "n_prompt_tokens": int(e.n_prompt_tokens), "seed": s.seed,
                "date_string": s.date_string or None,
            })
        return rows


def build_probe_requests(questions: Sequence[Question], styles: Sequence[Style],
                         variants: Sequence[Variant], countries: Sequence[str | None], *,
                         experiment: str, model_name: str, shuffle_seed: int = 0) -> list[ProbeRequest]:
    """Every (style, variant, country, question) prompt with its row key, in the order of
    ``work.probe_cells``."""
    by_id = {q.id: q for q in questions}
    return [ProbeRequest(c.key, build_prompt(by_id[c.qid], c.style, c.variant, c.country,
                                             seed=shuffle_seed), experiment)
            for c in probe_cells(experiment, model_name, styles, variants, countries,
                                 [q.id for q in questions])]
