import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conformance.harness.cases import MODELS
from conformance.harness.weights import golden_weights, save_checkpoint
from glm_asr import CheckpointError, ConfigError, GlmAsrModel, load_model

TINY = MODELS["tiny_a"]


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return golden_weights(TINY)


def checkpoint(tmp_path: Path, tensors: dict[str, torch.Tensor], config=TINY.config) -> Path:  # noqa: ANN001
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path / "model.safetensors")
    return tmp_path


def assert_same_weights(model: GlmAsrModel, weights: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    for key, value in weights.items():
        assert torch.equal(state[key].float(), value), key


def test_release_layout_tied_without_lm_head(tmp_path, weights):
    model = load_model(checkpoint(tmp_path, weights))
    assert_same_weights(model, weights)
    lm = model.language_model
    assert lm.lm_head.weight is lm.model.embed_tokens.weight  # tied: one tensor, not a copy
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_release_layout_with_the_stored_copy_of_lm_head(tmp_path, weights):
    stored = dict(weights, **{"language_model.lm_head.weight": weights["language_model.model.embed_tokens.weight"].clone()})
    model = load_model(checkpoint(tmp_path, stored))
    assert model.language_model.lm_head.weight is model.language_model.model.embed_tokens.weight


def test_tied_lm_head_that_differs_is_refused(tmp_path, weights):
    stored = dict(weights, **{"language_model.lm_head.weight": torch.zeros_like(weights["language_model.model.embed_tokens.weight"])})
    with pytest.raises(CheckpointError, match="differs from the token embedding"):
        load_model(checkpoint(tmp_path, stored))


def test_transformers_in_memory_layout(tmp_path, weights):
    renamed = {}
    for key, value in weights.items():
        if key.startswith("language_model.model."):
            key = "model.language_model." + key.removeprefix("language_model.model.")
        else:
            key = "model." + key
        renamed[key] = value
    renamed["lm_head.weight"] = weights["language_model.model.embed_tokens.weight"].clone()
    assert_same_weights(load_model(checkpoint(tmp_path, renamed)), weights)


def to_original_layout(weights: dict[str, torch.Tensor], config=TINY.config) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """The pre-2025-12-27 names, with interleaved RoPE rows (the inverse of the loader's permutation)."""
    a = config.audio_config
    half = a.rotary_dim // 2
    # rotate-half row j < R/2 came from interleaved row 2j; row R/2 + j from 2j + 1.
    inverse = [0] * a.head_dim
    for j in range(half):
        inverse[2 * j], inverse[2 * j + 1] = j, half + j
    inverse[a.rotary_dim :] = range(a.rotary_dim, a.head_dim)
    out = {}
    for key, value in weights.items():
        if key.startswith("audio_tower.layers."):
            parts = key.split(".")
            rest = ".".join(parts[3:])
            rest = {"self_attn.o_proj": "self_attn.out_proj", "input_layernorm": "self_attn_layer_norm",
                    "post_attention_layernorm": "final_layer_norm", "mlp.fc1": "fc1", "mlp.fc2": "fc2"}.get(rest.rsplit(".", 1)[0], rest.rsplit(".", 1)[0]) + "." + parts[-1]
            if rest in ("self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight"):
                rows = value.reshape(-1, a.head_dim, *value.shape[1:])
                value = rows[:, inverse].reshape(value.shape)
            key = f"audio_encoder.whisper.layers.{parts[2]}.{rest}"
        elif key.startswith(("audio_tower.conv1", "audio_tower.conv2")):
            key = "audio_encoder.whisper." + key.removeprefix("audio_tower.")
        elif key.startswith("audio_tower.norm."):
            key = "audio_encoder.layer_norm." + key.rsplit(".", 1)[1]
        elif key.startswith("multi_modal_projector.linear_"):
            index = {"1": "0", "2": "2"}[key.split(".")[1][-1]]
            key = f"audio_encoder.adapting.{index}.{key.rsplit('.', 1)[1]}"
        else:
            key = key.removeprefix("language_model.")
        out[key] = value
    out["audio_encoder.proj.weight"] = torch.zeros(3, 3)  # shipped, unused: dropped by the rename table
    out["audio_encoder.audio_bos_eos_token.weight"] = torch.zeros(2, 4)
    return out


def test_original_layout_renames_and_unpermutes_rope_rows(tmp_path, weights):
    model = load_model(checkpoint(tmp_path, to_original_layout(weights)))
    assert_same_weights(model, weights)


def test_sharded_checkpoint(tmp_path, weights):
    keys = sorted(weights)
    half = len(keys) // 2
    save_file({k: weights[k] for k in keys[:half]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({k: weights[k] for k in keys[half:]}, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {k: f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(keys)}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(TINY.config.to_dict()))
    assert_same_weights(load_model(tmp_path), weights)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dtype_conversion(tmp_path, weights, dtype):
    model = load_model(checkpoint(tmp_path, weights), dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}


def test_bf16_checkpoint_loads_as_fp32(tmp_path, weights):
    model = load_model(save_checkpoint(tmp_path, TINY.config, weights, dtype=torch.bfloat16))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    key = "audio_tower.conv1.weight"
    assert torch.equal(model.state_dict()[key], weights[key].bfloat16().float())


def test_dtype_none_keeps_each_tensor_as_stored(tmp_path, weights):
    mixed = {k: v.bfloat16() if k.startswith("language_model.") else v for k, v in weights.items()}
    model = load_model(checkpoint(tmp_path, mixed), dtype=None)
    state = model.state_dict()
    assert all(state[k].dtype == v.dtype and torch.equal(state[k], v) for k, v in mixed.items())
    assert {p.dtype for p in model.parameters()} == {torch.float32, torch.bfloat16}


def test_every_problem_in_one_error(tmp_path, weights):
    broken = dict(weights)
    del broken["audio_tower.layers.0.self_attn.q_proj.bias"]
    del broken["language_model.model.norm.weight"]
    broken["audio_tower.layers.0.self_attn.k_proj.bias"] = torch.zeros(32)  # a bias on k: the classic trap
    broken["multi_modal_projector.linear_1.weight"] = torch.zeros(7, 7)
    with pytest.raises(CheckpointError) as info:
        load_model(checkpoint(tmp_path, broken))
    message = str(info.value)
    for fragment in [
        "missing [audio_tower.layers.0.self_attn.q_proj.bias, language_model.model.norm.weight] (2)",
        "unexpected [audio_tower.layers.0.self_attn.k_proj.bias] (1)",
        "multi_modal_projector.linear_1.weight: torch.float32 (7, 7), expected a float tensor of shape (96, 128)",
        str(tmp_path),
    ]:
        assert fragment in message
    assert "\n" not in message


def test_unknown_key_in_a_layout_is_named(tmp_path, weights):
    with pytest.raises(CheckpointError, match=r"keys unknown to the release layout: \[vision_tower.weight\]"):
        load_model(checkpoint(tmp_path, dict(weights, **{"vision_tower.weight": torch.zeros(1)})))


def test_non_float_tensor_is_refused(tmp_path, weights):
    broken = dict(weights, **{"audio_tower.norm.bias": torch.zeros(32, dtype=torch.int8)})
    with pytest.raises(CheckpointError, match=r"audio_tower.norm.bias: torch.int8 \(32,\), expected a float tensor"):
        load_model(checkpoint(tmp_path, broken))


def test_directory_problems(tmp_path, weights):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_model(tmp_path / "nowhere")
    checkpoint(tmp_path, weights)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor model.safetensors.index.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ConfigError, match="no such file"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="dtype=torch.int32"):
        load_model(tmp_path, dtype=torch.int32)


def test_truncated_safetensors_is_named(tmp_path, weights):
    path = checkpoint(tmp_path, weights) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor .* file truncated or corrupt"):
        load_model(tmp_path)
    path.write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError, match=r"model.safetensors: not a safetensors file"):
        load_model(tmp_path)
