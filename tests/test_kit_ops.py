"""The kit names the wrong operation inside a failing stage for bugs its catalogue (conformance/kit/bugs.py)
has never seen: one-line bugs written here, each patched around our model as the port, are located from the
port's sub-stage tensors and, where the bug is a one-op variant the kit knows, from the stage outputs alone."""

import contextlib
import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from conformance.kit import check as kit_check
from conformance.kit import export as kit
from conformance.kit.bugs import BUGS
from conformance.kit.ops import sub_stage_names
from tests.test_kit import kit_dir, ours_port  # noqa: F401  (kit_dir: the shared exported kit)

@contextlib.contextmanager
def _zero(param: torch.nn.Parameter):
    saved = param.detach().clone()
    with torch.no_grad():
        param.zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            param.copy_(saved)


def _each(modules, attr, make):
    stack = contextlib.ExitStack()
    for m in modules:
        stack.enter_context(mock.patch.object(m, attr, make(m)))
    return stack


def _rope_exponent_over_head_dim(model):
    tower = model.audio_tower

    def rope(num_frames, x):
        c = tower.config
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.rotary_dim, 2, dtype=torch.float) / c.head_dim))
        emb = torch.cat([torch.arange(num_frames).float()[:, None] * inv] * 2, dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    return mock.patch.object(tower, "rope", rope)


def _residual_from_norm(model):
    def forward(layer):
        def f(x, cos, sin, mask, cache, offset):
            n = layer.input_layernorm(x)
            h = n + layer.self_attn(n, cos, sin, mask, cache, offset)  # the normalised input as the residual
            return h + layer.mlp(layer.post_attention_layernorm(h))
        return f

    return _each(model.language_model.model.layers, "forward", forward)


def _causal_encoder(model):
    return _each([layer.self_attn.attention for layer in model.audio_tower.layers], "forward",
                 lambda attention: lambda q, k, v, mask=None: F.scaled_dot_product_attention(q, k, v, is_causal=True))


def _v_scaled(model):  # no variant the kit knows: only the sub-stages can name it
    return _each([layer.self_attn.v_proj for layer in model.language_model.model.layers], "forward",
                 lambda lin: lambda x: F.linear(x, lin.weight) * 1.01)


# name -> (case, patch, first failing stage, the operation's words, the variant's words or None)
NEW_BUGS = {
    "projector_tanh_gelu": ("tiny_a/speech_like/fp32",
                            lambda m: mock.patch.object(m.multi_modal_projector, "forward",
                                                        lambda x, p=m.multi_modal_projector: p.linear_2(F.gelu(p.linear_1(x), approximate="tanh"))),
                            "projector", "the projector's activation", "tanh-approximated GELU instead of exact (erf) GELU"),
    "encoder_q_bias_dropped": ("tiny_b/speech_like/fp32", lambda m: _zero(m.audio_tower.layers[0].self_attn.q_proj.bias),
                               "encoder.layers.0", "the query projection (q_proj)", "no bias"),
    "encoder_causal_mask": ("tiny_b/speech_like/fp32",
                            _causal_encoder,
                            "encoder.layers.0", "the attention itself", "a causal mask"),
    "rope_exponent_over_head_dim": ("tiny_b/speech_like/fp32", _rope_exponent_over_head_dim, "encoder.layers.0", "the attention itself",
                                    "frequency exponent over head_dim"),
    "decoder_residual_from_norm": ("tiny_a/speech_like/fp32", _residual_from_norm, "decoder.layers.0", "the attention's residual add",
                                   "the normalised input as the residual"),
    "untied_head_reads_embeddings": ("tiny_b/speech_like/fp32",
                                     lambda m: mock.patch.object(m.language_model.lm_head, "weight", m.language_model.model.embed_tokens.weight),
                                     "logits", "the LM head", "the token embeddings as the LM head"),
    "decoder_v_scaled": ("tiny_a/speech_like/fp32", _v_scaled, "decoder.layers.0", "the value projection (v_proj)", None),
}


def run_new_bug(kit_dir, name, sub_stages):  # noqa: F811
    case_id, patch, *_ = NEW_BUGS[name]
    made = kit.load_kit(kit_dir, verify=False)
    case = made["cases"][case_id]
    model = ours_port.load(kit_dir, case)
    with patch(model):
        tensors = ours_port.run_case(model, kit_dir, case, made["generate"]["max_new_tokens"], False, sub_stages)
    return kit_check.check_case(kit_dir, case_id, case, tensors)


def test_the_new_bugs_are_not_in_the_catalogue():
    assert not set(NEW_BUGS) & set(BUGS)


@pytest.mark.parametrize("name", sorted(NEW_BUGS))
def test_a_bug_outside_the_catalogue_is_located_from_the_sub_stages(kit_dir, name):  # noqa: F811
    _, _, stage, op, variant = NEW_BUGS[name]
    result = run_new_bug(kit_dir, name, True)
    assert result.first_failure == stage
    assert "(known bug" not in (result.diagnosis or "")  # the catalogue cannot name it
    assert f"{op}" in result.operation and "its input is right, its output is wrong" in result.operation, result.operation
    if variant:
        assert f"it equals the reference with {variant}" in result.operation or variant in result.operation, result.operation


@pytest.mark.parametrize("name", ["rope_exponent_over_head_dim", "decoder_residual_from_norm", "decoder_v_scaled"])
def test_from_the_stage_outputs_alone_a_known_variant_is_named_and_anything_else_is_bracketed(kit_dir, name):  # noqa: F811
    _, _, stage, op, variant = NEW_BUGS[name]
    result = run_new_bug(kit_dir, name, False)
    assert result.first_failure == stage
    if variant:
        assert op in result.operation and variant in result.operation and "that change alone" in result.operation, result.operation
    else:
        assert "no one-op variant the kit knows matches" in result.operation
        assert f"give the sub-stage tensors {stage}.input_layernorm .. {stage}.mlp" in result.operation


def test_sub_stage_names_are_what_our_port_gives(kit_dir):  # noqa: F811
    made = kit.load_kit(kit_dir, verify=False)
    case = made["cases"]["tiny_b/silence/fp32"]
    tensors = ours_port.run_case(ours_port.load(kit_dir, case), kit_dir, case, 2, False)
    config = kit_check.case_config(kit_dir, case)
    # every sub-stage but the front end's steps, which glm_asr computes in one function (no module to hook)
    assert {n for n in sub_stage_names(config) if not n.startswith("mel.")} <= set(tensors)
    assert math.isclose(float(tensors["decoder.layers.0.attn_residual"].sum()),
                        float((tensors["inputs_embeds"] + tensors["decoder.layers.0.self_attn"]).sum()), rel_tol=1e-5)
