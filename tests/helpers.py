"""Test helpers shared by several test files: tiny model configs and random weights.

Importable as ``helpers`` from any test (pytest puts tests/ on sys.path) and as
``tests.helpers`` from a subprocess that has the repository root on PYTHONPATH.
"""

from __future__ import annotations

import fsspec
import numpy as np
from etils.epath import backend as epath_backend

from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.decoder import nest_params
from valueprobe_jax.models.layers import param_shapes

# One tiny decoder per block kind (GQA + tied embeddings, Falcon's parallel block with MQA,
# Bloom's ALiBi with biases and embedding norm); vocab 96 for synthetic token ids.
TINY_CONFIGS = {
    "llama-gqa-tied": ModelConfig(family="llama", vocab_size=96, hidden_size=32, num_layers=2,
                                  num_heads=8, num_kv_heads=2, head_dim=4, intermediate_size=48,
                                  tie_embeddings=True),
    "falcon-parallel-mqa": ModelConfig(family="falcon", vocab_size=96, hidden_size=32,
                                       num_layers=2, num_heads=4, num_kv_heads=1, head_dim=8,
                                       intermediate_size=64, norm="layer", mlp="plain",
                                       activation="gelu", parallel_block=True),
    "bloom-alibi": ModelConfig(family="bloom", vocab_size=96, hidden_size=36, num_layers=2,
                               num_heads=6, num_kv_heads=6, head_dim=6, intermediate_size=72,
                               norm="layer", position="alibi", qkv_bias=True, out_bias=True,
                               mlp="plain", mlp_bias=True, activation="gelu_tanh",
                               embed_norm=True),
}
# A Llama whose heads, kv heads, mlp and vocab divide by 4 and 8: shards on every test mesh.
SHARDABLE = ModelConfig(family="llama", vocab_size=96, hidden_size=32, num_layers=2, num_heads=8,
                        num_kv_heads=4, head_dim=8, intermediate_size=64)


def random_params(cfg: ModelConfig, seed: int = 0, *, std: float = 0.02,
                  norm_jitter: float = 0.1) -> dict:
    """Weights and biases N(0, std^2), norm scales 1 + N(0, norm_jitter^2) (exactly 1 for
    norm_jitter=0), drawn with numpy in ``param_shapes`` order (no per-shape jit of eager
    initialisers), float32."""
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in param_shapes(cfg).items():
        x = rng.standard_normal(shape)
        flat[name] = (1.0 + norm_jitter * x if name.endswith("_scale") else std * x).astype(np.float32)
    return nest_params(flat)


def randomize_torch(model, seed: int, *, std: float, norm_std: float | None = None,
                    is_norm=lambda name: "norm" in name) -> None:
    """Random weights for a transformers model in place (HF initialises biases to 0 and norms to
    1): N(0, std^2) everywhere, or 1 + N(0, norm_std^2) for the parameters ``is_norm`` names."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + norm_std * noise if norm_std is not None and is_norm(name) else std * noise)



class FakeObjectStore(epath_backend._FileSystemSpecBackend):  # noqa: SLF001
    """s3:// paths in fsspec's in-memory filesystem that refuse renames, as a bucket has none;
    register with ``monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "s3", FakeObjectStore())``."""

    def fs(self, path):
        return fsspec.filesystem("memory")

    def rename(self, path, dst):
        raise AssertionError("object storage has no atomic rename: io must not use one")

    replace = rename

