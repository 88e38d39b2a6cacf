"""The full-size architecture, built on the meta device: exact parameter counts and per-stage shapes."""

import torch

from glm_asr import GlmAsrConfig, GlmAsrModel, capture, log_mel
from glm_asr.model.projector import merge_frames

# SPEC's exact counts. The often-quoted ~450M / ~5M / ~1B figures are wrong for this architecture.
AUDIO_TOWER = 635_048_960
PROJECTOR = 29_366_272
LANGUAGE_MODEL = 1_472_055_296  # lm_head tied to the embedding: counted once
PROMPT_TOKENS = 394  # a 30 s window: 375 audio tokens and the prompt's text tokens


def full_model() -> GlmAsrModel:
    with torch.device("meta"):
        return GlmAsrModel(GlmAsrConfig())


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_exact_parameter_counts():
    model = full_model()
    assert count(model.audio_tower) == AUDIO_TOWER
    assert count(model.audio_tower.layers[0]) == 19_676_160
    assert count(model.audio_tower.conv1) + count(model.audio_tower.conv2) == 5_409_280
    assert count(model.multi_modal_projector) == PROJECTOR
    assert count(model.language_model) == LANGUAGE_MODEL
    assert count(model.language_model.model.layers[0]) == 48_238_592
    assert count(model) == AUDIO_TOWER + PROJECTOR + LANGUAGE_MODEL == 2_136_470_528
    state = model.state_dict()
    assert len(state) == 745  # the release's tensor count, lm_head included
    assert sum(v.numel() for v in state.values()) == 2_257_843_200  # as stored, with the lm_head copy


def test_stage_shapes_for_a_30s_window(snapshot):
    model = full_model()
    mel, mask = log_mel(torch.zeros(480_000))
    assert int(mask.sum()) == 3000
    with capture() as taps:
        states = model.audio_tower(mel.to("meta"))
        merged = merge_frames(states)
        taps["merged"] = merged
        taps["projector"] = model.multi_modal_projector(merged)
        embeds = torch.empty(1, PROMPT_TOKENS, 2048, device="meta")
        taps["inputs_embeds"] = embeds
        model.decode(embeds)
    taps["mel"] = mel
    assert {name: " x ".join(map(str, t.shape)) for name, t in taps.items()} == snapshot
