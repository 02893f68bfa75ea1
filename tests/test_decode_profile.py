"""`bench.decode_profile`: the per-op table of a decode step, on a tiny config. The layouts it
compares compute the same step, and its categories name what XLA:CPU runs."""

import jax
import numpy as np
import pytest

from valueprobe_jax.bench import decode_profile as dp

from helpers import TINY_CONFIGS, random_params


def test_category_reads_name_and_shape():
    assert dp.category("ynn_fusion.2", "f32[64,1536]{1,0}", 64) == "weight matmul"
    assert dp.category("ynn_fusion.16", "f32[64,49152]{1,0}", 64) == "weight matmul"
    assert dp.category("ynn_fusion.13", "f32[64,3,3,128]{3,2,1,0}", 64) == "attention"
    assert dp.category("ynn_fusion.9", "f32[4,1536]{1,0}", 64) == "attention"  # not [rows, N]
    assert dp.category("dynamic-slice_bitcast_fusion.1", "f32[576,1536]{1,0}", 64) == "layer slice copy"
    assert dp.category("broadcast_select_fusion.3", "f32[64,3,64,128]", 64) == "gather"
    assert dp.category("gather_bitcast_fusion", "f32[64,3,64,128]", 64) == "gather"
    assert dp.category("copy_bitcast_fusion", "f32[576,576]{1,0}", 64) == "other"


def test_op_shapes_parses_compiled_text():
    fn = jax.jit(lambda a, b: (a @ b).sum(axis=0)).lower(np.ones((3, 4), np.float32),
                                                        np.ones((4, 5), np.float32)).compile()
    shapes = dp.op_shapes(fn.as_text())
    assert "f32[3,4]{1,0}" in shapes.values() and "f32[5]{0}" in shapes.values()


@pytest.mark.parametrize("layout", ["per_layer", "unrolled"])
def test_layouts_compute_the_same_step(layout):
    cfg = TINY_CONFIGS["llama-gqa-tied"]
    params = random_params(cfg, std=0.3)
    args = dp.step_inputs(cfg, params, rows=4, prompts=2, prompt_len=8, ring=5)
    ref_fn, ref_args = dp.compiled_step(cfg, args, "stacked")
    fn, new_args = dp.compiled_step(cfg, args, layout)
    if layout == "per_layer":
        assert isinstance(new_args[0]["layers"], list) and len(new_args[0]["layers"]) == cfg.num_layers
    for a, b in zip(ref_fn(*ref_args), fn(*new_args)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_profile_counts_the_stacked_layers_slice_copies():
    """The scan slices each layer's weights out of the stack (XLA:CPU: dynamic-slice ops, one per
    weight per layer); per-layer buffers have none. Times are not checked, only what ran."""
    if jax.default_backend() != "cpu":
        pytest.skip("the categories read XLA:CPU's op names")
    cfg = TINY_CONFIGS["llama-gqa-tied"]
    params = random_params(cfg, std=0.3)
    kw = dict(prompts=2, prompt_len=8, ring=5, repeats=1, trace_steps=2)
    stacked = dp.profile(cfg, params, 4, layout="stacked", **kw)
    per_layer = dp.profile(cfg, params, 4, layout="per_layer", **kw)
    assert stacked["by_category"]["layer slice copy"] > 0
    assert per_layer["by_category"]["layer slice copy"] == 0
    assert stacked["flops"] == per_layer["flops"] > 0
    text = dp.format_profile(stacked, peak=100.0, top=3)
    assert text.startswith("rows 4, stacked: ") and len(text.splitlines()) == 5
