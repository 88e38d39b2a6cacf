"""The weight-layout writer of the llama.cpp port (tools/ports/llamacpp/original_layout.py), without the build:
what it writes must load through glm_asr's own "original"-layout rename table back to the same weights."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from glm_asr.io.checkpoint import load_model
from tests.conftest import model_folder

PORT = Path(__file__).resolve().parents[1] / "tools" / "ports" / "llamacpp" / "original_layout.py"


def _port():
    spec = importlib.util.spec_from_file_location("llamacpp_original_layout", PORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["tiny_a", "tiny_b"])
def test_original_layout_round_trips_through_the_loader(tmp_path: Path, name: str) -> None:
    src = model_folder(tmp_path / "src", name)
    dst = tmp_path / "original"
    _port().write_original(src, dst)

    written = load_file(dst / "model.safetensors")
    assert any(k.startswith("audio_encoder.whisper.layers.") for k in written)
    # glm_asr reads the original layout (un-interleaving the RoPE rows) given the transformers config.
    check = tmp_path / "check"
    check.mkdir()
    shutil.copy(dst / "model.safetensors", check)
    shutil.copy(src / "config.json", check)
    ours, reference = load_model(check).state_dict(), load_model(src).state_dict()
    assert ours.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(ours[key], value), key

    # What the loader drops but llama.cpp reads: a zero position table, boi / eoi = the tokens' embeddings.
    config = json.loads((src / "config.json").read_text())
    ids = {t["content"]: t["id"] for t in json.loads((src / "tokenizer.json").read_text())["added_tokens"]}
    embed = written["model.embed_tokens.weight"]
    assert not written["audio_encoder.whisper.embed_positions.weight"].any()
    np.testing.assert_array_equal(written["audio_encoder.audio_bos_eos_token.weight"],
                                  embed[[ids["<|begin_of_audio|>"], ids["<|end_of_audio|>"]]])
    # tiny_b has its own head; tiny_a is tied and saved without one, and llama.cpp's converter needs one.
    head = load_file(src / "model.safetensors").get("language_model.lm_head.weight", embed)
    np.testing.assert_array_equal(written["lm_head.weight"], head)
    original = json.loads((dst / "config.json").read_text())
    assert original["architectures"] == ["GlmasrModel"]
    assert original["whisper_config"]["encoder_layers"] == config["audio_config"]["num_hidden_layers"]
    assert original["lm_config"]["head_dim"] == config["text_config"]["head_dim"]


def test_original_layout_rejects_an_unknown_key(tmp_path: Path) -> None:
    port = _port()
    weights = {"audio_tower.conv1.weight": np.zeros((2, 2, 3), np.float32),
               "audio_tower.bogus": np.zeros(1, np.float32)}
    with pytest.raises(ValueError, match="audio_tower.bogus"):
        port.original_weights(weights, {"audio_config": {"hidden_size": 8, "num_attention_heads": 2}}, {})


def test_decoder_speed_names_a_folder_that_is_not_a_llama_cpp_tree(tmp_path: Path) -> None:
    """tools/ports/llamacpp/decoder_speed.py builds llama.cpp's llama-bench: a wrong source folder is one line naming
    it, before any build starts."""
    import subprocess
    import sys

    tool = PORT.parent / "decoder_speed.py"
    run = subprocess.run([sys.executable, str(tool), str(tmp_path), str(tmp_path / "build")], capture_output=True, text=True)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [f"{tmp_path}: no tools/llama-bench or gguf-py; expected a llama.cpp source tree (README.md: Sources used)"]
    assert not (tmp_path / "build").exists()
