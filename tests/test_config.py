import json
from pathlib import Path

import pytest

from glm_asr import ConfigError, GlmAsrConfig
from glm_asr.model.config import MERGE_FACTOR


def released_dict() -> dict:
    return GlmAsrConfig().to_dict()


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_default_is_the_released_model():
    c = GlmAsrConfig()
    a, t = c.audio_config, c.text_config
    assert (a.hidden_size, a.intermediate_size, a.num_hidden_layers, a.num_attention_heads, a.head_dim) == (1280, 5120, 32, 20, 64)
    assert (a.num_mel_bins, a.rope_theta, a.rotary_dim, a.layer_norm_eps) == (128, 10000.0, 32, 1e-5)
    assert (t.vocab_size, t.hidden_size, t.intermediate_size, t.num_hidden_layers) == (59264, 2048, 6144, 28)
    assert (t.num_attention_heads, t.num_key_value_heads, t.head_dim, t.rms_norm_eps) == (16, 4, 128, 1e-5)
    assert t.eos_token_id == (59246, 59253, 59255)
    assert (c.audio_token_id, c.tie_word_embeddings, MERGE_FACTOR) == (59260, True, 4)


def test_round_trip_through_config_json(tmp_path):
    assert GlmAsrConfig.from_file(write(tmp_path, released_dict())) == GlmAsrConfig()


def test_release_style_file_with_extra_keys_and_bare_rope_theta(tmp_path):
    data = released_dict()
    data.update(dtype="bfloat16", transformers_version="5.0.0", architectures=["X"])
    for sub in ("audio_config", "text_config"):
        rope = data[sub].pop("rope_parameters")
        data[sub]["rope_theta"] = rope["rope_theta"]
    data["audio_config"]["partial_rotary_factor"] = 0.5
    data["text_config"]["eos_token_id"] = 59246
    config = GlmAsrConfig.from_file(write(tmp_path, data))
    assert config.text_config.eos_token_id == (59246,)
    assert config.audio_config.rotary_dim == 32


def test_audio_partial_rotary_factor_defaults_to_half_like_the_reference(tmp_path):
    data = released_dict()
    data["audio_config"]["rope_parameters"] = {"rope_theta": 10000.0, "rope_type": "default"}
    assert GlmAsrConfig.from_file(write(tmp_path, data)).audio_config.partial_rotary_factor == 0.5


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d["audio_config"].pop("hidden_size"), "missing field audio_config.hidden_size"),
        (lambda d: d["text_config"].pop("num_key_value_heads"), "missing field text_config.num_key_value_heads"),
        (lambda d: d.pop("text_config"), "missing field text_config"),
        (lambda d: d["text_config"].update(hidden_size="2048"), "text_config.hidden_size must be int, got str"),
        (lambda d: d["text_config"].update(rms_norm_eps=[1e-5]), "text_config.rms_norm_eps must be float"),
        (lambda d: d["audio_config"].update(num_hidden_layers=True), "audio_config.num_hidden_layers must be int, got bool"),
        (lambda d: d["audio_config"].update(num_attention_heads=0), "audio_config.num_attention_heads must be a positive integer"),
        (lambda d: d["audio_config"].update(hidden_act="gelu_new"), "audio_config.hidden_act = 'gelu_new' is not supported"),
        (lambda d: d["text_config"].update(attention_bias=True), "text_config.attention_bias = True is not supported"),
        (lambda d: d["text_config"]["rope_parameters"].update(rope_type="llama3"), "text_config.rope_type = 'llama3' is not supported"),
        (lambda d: d["audio_config"].update(intermediate_size=4096), "audio_config.intermediate_size = 4096"),
        (lambda d: d["text_config"].update(eos_token_id="x"), "text_config.eos_token_id must be an integer or a list"),
        (lambda d: d.update(audio_token_id=60000), "audio_token_id = 60000"),
    ],
)
def test_bad_fields_are_named(tmp_path, edit, expected):
    data = released_dict()
    edit(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        GlmAsrConfig.from_file(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message and "\n" not in message


def test_not_json_and_missing_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json: not valid JSON"):
        GlmAsrConfig.from_file(bad)
    with pytest.raises(ConfigError, match="no such file"):
        GlmAsrConfig.from_file(tmp_path / "absent.json")
