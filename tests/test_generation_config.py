"""generation_config.json -> GenerationConfig as transformers 4.45 reads it, on load_model of an
HF directory and of an orbax directory converted from it (the file travels with the conversion)."""

import json

import pytest

from valueprobe_jax.cli import main
from valueprobe_jax.errors import InputError
from valueprobe_jax.models import generation_config as G
from valueprobe_jax.models.checkpoints import load_model, save_orbax

from test_checkpoints import TINY, _write

QWEN_INSTRUCT = {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                 "eos_token_id": [151645, 151643], "repetition_penalty": 1.05,
                 "temperature": 0.7, "top_p": 0.8, "top_k": 20, "transformers_version": "4.37.0"}


def _dir(tmp_path, name, gen=None, config_eos=None):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"eos_token_id": config_eos}))
    if gen is not None:
        (d / G.GENERATION_CONFIG_FILE).write_text(gen if isinstance(gen, str) else json.dumps(gen))
    return d


def test_defaults_are_transformers_4_45s(tmp_path):
    gc = G.read_generation_config(_dir(tmp_path, "none", config_eos=2))
    assert gc == G.GenerationConfig(eos_token_ids=(2,))
    assert (gc.do_sample, gc.temperature, gc.top_k, gc.top_p, gc.repetition_penalty,
            gc.max_new_tokens, gc.source) == (False, 1.0, 50, 1.0, 1.0, None, None)
    gc = G.read_generation_config(_dir(tmp_path, "list", config_eos=[128001, 128008, 128009]))
    assert gc.eos_token_ids == (128001, 128008, 128009)
    assert G.read_generation_config(tmp_path / "empty-dir-without-files").eos_token_ids == ()


def test_the_file_overrides_the_defaults_and_owns_the_eos_list(tmp_path):
    d = _dir(tmp_path, "qwen", QWEN_INSTRUCT, config_eos=151643)
    gc = G.read_generation_config(d)
    assert (gc.do_sample, gc.temperature, gc.top_k, gc.top_p, gc.repetition_penalty) == \
        (True, 0.7, 20, 0.8, 1.05)
    assert gc.eos_token_ids == (151645, 151643) and gc.source == str(d / G.GENERATION_CONFIG_FILE)
    assert gc.raw == QWEN_INSTRUCT and "top_k=20" in gc.describe()
    # Llama-3.1-Instruct style: absent keys take the defaults (top_k 50), eos as an int
    gc = G.read_generation_config(_dir(tmp_path, "llama", {"do_sample": True, "temperature": 0.6,
                                                           "top_p": 0.9, "eos_token_id": 7}))
    assert (gc.top_k, gc.top_p, gc.repetition_penalty, gc.eos_token_ids) == (50, 0.9, 1.0, (7,))
    # a file without eos_token_id: transformers does not fall back to config.json's
    assert G.read_generation_config(_dir(tmp_path, "noeos", {"top_k": 5}, 3)).eos_token_ids == ()
    # null switches the processor off
    gc = G.read_generation_config(_dir(tmp_path, "nulls", {"top_k": None, "top_p": None,
                                                           "temperature": None}))
    assert (gc.top_k, gc.top_p, gc.temperature) == (0, 1.0, 1.0)


@pytest.mark.parametrize("text,needle", [
    ("{not json", "invalid JSON"), ("[1, 2]", "expected a JSON object"),
    ('{"top_k": "fifty"}', "top_k"), ('{"eos_token_id": "</s>"}', "eos_token_id"),
    ('{"do_sample": "yes"}', "do_sample"), ('{"top_p": -1}', "top_p")])
def test_bad_files_give_one_line_naming_the_file(tmp_path, text, needle):
    d = _dir(tmp_path, "bad", text)
    with pytest.raises(InputError) as e:
        G.read_generation_config(d)
    msg = str(e.value)
    assert "\n" not in msg and str(d / G.GENERATION_CONFIG_FILE) in msg and needle in msg, msg


def test_load_model_reads_it_and_convert_carries_it(tmp_path):
    hf = _write(tmp_path / "hf", dict(TINY, eos_token_id=5))
    (hf / G.GENERATION_CONFIG_FILE).write_text(json.dumps(QWEN_INSTRUCT))
    loaded = load_model(hf)
    assert loaded.generation_config.top_k == 20
    assert loaded.generation_config.eos_token_ids == (151645, 151643)
    out = save_orbax(tmp_path / "orbax", loaded.cfg, loaded.params,
                     generation_config=loaded.generation_config)
    assert json.loads((out / G.GENERATION_CONFIG_FILE).read_text()) == QWEN_INSTRUCT  # a copy
    again = load_model(out).generation_config
    assert again == loaded.generation_config
    assert main(["convert", "--model", str(hf), "--out", str(tmp_path / "cli")]) == 0
    assert load_model(tmp_path / "cli").generation_config == loaded.generation_config

    # no generation_config.json: defaults, eos from config.json, kept through the conversion
    plain = load_model(_write(tmp_path / "plain", dict(TINY, eos_token_id=[5, 6])))
    assert plain.generation_config == G.GenerationConfig(eos_token_ids=(5, 6))
    out = save_orbax(tmp_path / "orbax2", plain.cfg, plain.params,
                     generation_config=plain.generation_config)
    assert not (out / G.GENERATION_CONFIG_FILE).exists()
    assert load_model(out).generation_config == plain.generation_config
    # a directory saved without one (older conversions): the defaults
    out = save_orbax(tmp_path / "orbax3", plain.cfg, plain.params)
    assert load_model(out).generation_config == G.GenerationConfig()
