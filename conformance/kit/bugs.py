"""Known porting bugs as variants of our model, applied in-process (patches undone on exit), never by editing
glm_asr/: the kit's diagnosis recomputes a failing stage under each and names the one a port matches.

Each bug names the stage where it first shows, says what it is in words that complete "<stage> equals the
reference with ...", and changes the model through `patch` (a context manager around the computation), the
inputs through `inputs` (e.g. position ids) or the front end through `front_end` (features, mask, prompt ids).
The same names are the text edits of conformance/harness/mutations.py where one exists, so tools/ports/ours_port.py
run from a mutated checkout must be diagnosed with the bug of the same name (tools/kit_mutation_check.py);
tests/test_kit.py applies each bug here in-process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

import glm_asr.model.front_end
import glm_asr.model.decoder
import glm_asr.model.encoder
import glm_asr.runtime.dispatch
import glm_asr.model.glm_asr
import glm_asr.transcription.processor
import glm_asr.model.rope
from glm_asr.model.attention import ScaledDotProductAttention
from glm_asr.model.glm_asr import GlmAsrModel

from conformance.harness import ours
from conformance.harness.cases import MODELS
from conformance.harness.rope_variants import apply_rope_interleaved


@dataclass(frozen=True)
class Bug:
    stage: str  # the first stage it changes: a stage name, or a prefix ending in "." for every layer
    says: str  # completes "<stage> equals the reference with ..."
    patch: Callable[[GlmAsrModel], contextlib.AbstractContextManager] = lambda model: contextlib.nullcontext()
    inputs: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    front_end: bool = False  # shows only in a port's own features or prompt (tools/ports/ours_port.py --own-front-end)
    visible: str = ""  # when not every case shows it: which do, and why
    shown_by: str = "speech_like/fp32"  # the case (audio/dtype) of EVERY tiny model the kit's own checks run it on


def shown_on(bug: Bug) -> list[str]:
    """The golden cases that show a bug: its `shown_by` case of each tiny model (no bug may hide in one model)."""
    return [f"{model}/{bug.shown_by}" for model in MODELS]


@contextlib.contextmanager
def _set(objs: list, attr: str, value) -> Iterator[None]:  # noqa: ANN001
    old = [getattr(o, attr) for o in objs]
    for o in objs:
        setattr(o, attr, value)
    try:
        yield
    finally:
        for o, v in zip(objs, old):
            setattr(o, attr, v)


def _triangles(filter_hz: np.ndarray, normalise: bool = True) -> np.ndarray:
    """glm_asr.model.front_end.mel_filters' triangles over given filter edges; `normalise` is the Slaney area scaling."""
    fft_hz = np.linspace(0, glm_asr.model.front_end.SAMPLING_RATE // 2, glm_asr.model.front_end.N_FFT // 2 + 1)
    slopes = filter_hz[None, :] - fft_hz[:, None]
    widths = np.diff(filter_hz)
    triangles = np.maximum(0.0, np.minimum(-slopes[:, :-2] / widths[:-1], slopes[:, 2:] / widths[1:]))
    return triangles * (2.0 / (filter_hz[2:] - filter_hz[:-2]))[None, :] if normalise else triangles


def _htk_filters(n_mels: int = 128) -> np.ndarray:
    mel_points = np.linspace(0.0, 2595.0 * np.log10(1.0 + (glm_asr.model.front_end.SAMPLING_RATE / 2) / 700.0), n_mels + 2)
    return _triangles(700.0 * (10.0 ** (mel_points / 2595.0) - 1.0))


def _unnormalised_filters(n_mels: int = 128) -> np.ndarray:
    edges = np.array([0.0, glm_asr.model.front_end.SAMPLING_RATE / 2.0])
    mel_points = np.linspace(*glm_asr.model.front_end._hz_to_mel(edges), n_mels + 2)
    return _triangles(glm_asr.model.front_end._mel_to_hz(mel_points), normalise=False)


def _symmetric_hann(n: int, **kwargs) -> torch.Tensor:  # noqa: ANN003
    return _HANN(n, periodic=False, **kwargs)


_HANN = torch.hann_window


def _full_rotary(model: GlmAsrModel) -> contextlib.AbstractContextManager:
    tower = model.audio_tower

    def rope(num_frames: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(num_frames, device=x.device)
        return glm_asr.model.encoder.rope_cos_sin(positions, tower.config.head_dim, tower.config.rope_theta, x.dtype)

    return mock.patch.object(tower, "rope", rope)


def _tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _encoder_mlp_tanh(model: GlmAsrModel) -> contextlib.AbstractContextManager:
    stack = contextlib.ExitStack()
    for layer in model.audio_tower.layers:
        mlp = layer.mlp
        stack.enter_context(mock.patch.object(mlp, "forward", lambda x, mlp=mlp: mlp.fc2(_tanh_gelu(mlp.fc1(x)))))
    return stack


def _encoder_mlp(act: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[GlmAsrModel], contextlib.AbstractContextManager]:
    def patch(model: GlmAsrModel) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        for layer in model.audio_tower.layers:
            mlp = layer.mlp
            stack.enter_context(mock.patch.object(mlp, "forward", lambda x, mlp=mlp: mlp.fc2(act(mlp.fc1(x)))))
        return stack

    return patch


def _decoder_mlp(gated: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[GlmAsrModel], contextlib.AbstractContextManager]:
    def patch(model: GlmAsrModel) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        for layer in model.language_model.model.layers:
            mlp = layer.mlp
            stack.enter_context(mock.patch.object(mlp, "forward", lambda x, mlp=mlp: mlp.down_proj(gated(mlp.gate_proj(x), mlp.up_proj(x)))))
        return stack

    return patch


def _scaled_attention(layers: Callable[[GlmAsrModel], torch.nn.ModuleList]) -> Callable[[GlmAsrModel], contextlib.AbstractContextManager]:
    """Each attention of one tower with q divided by sqrt(Dh) first: SDPA divides again, 1/Dh in all."""

    def patch(model: GlmAsrModel) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        for layer in layers(model):
            attention = layer.self_attn.attention
            scaled = lambda q, k, v, mask=None, real=attention.forward: real(q / q.shape[-1] ** 0.5, k, v, mask)  # noqa: E731
            stack.enter_context(mock.patch.object(attention, "forward", scaled))
        return stack

    return patch


def _rms_norms(model: GlmAsrModel) -> list:
    return [m for m in model.language_model.modules() if isinstance(m, glm_asr.model.decoder.RMSNorm)]


def _layer_norms(model: GlmAsrModel) -> list:
    return [m for m in model.audio_tower.modules() if isinstance(m, torch.nn.LayerNorm)]


def _rms_scale_before_cast(self, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
    return (self.weight * x32).to(x.dtype)


def _rms_eps_outside_sqrt(self, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    x32 = x.float()
    x32 = x32 / (x32.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)
    return self.weight * x32.to(x.dtype)


def _tiled_gqa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ANN001
    repeat = q.shape[1] // k.shape[1]  # query head h reads kv head h % Hkv instead of h // repeat
    return _ATTENTION(self, q, k.repeat(1, repeat, 1, 1), v.repeat(1, repeat, 1, 1), mask)


_ATTENTION = ScaledDotProductAttention.forward  # the encoder has as many kv heads as heads: only the decoder changes


_MASK = glm_asr.model.decoder.attention_mask


def _causal_only(key_valid: torch.Tensor, num_queries: int, offset: int) -> torch.Tensor:
    return _MASK(torch.ones_like(key_valid), num_queries, offset)


def _merge_channels_first(encoder_states: torch.Tensor) -> torch.Tensor:
    W, frames, D = encoder_states.shape  # (W, F/2, D) -> (W, F/8, D, 4) flattened: channel-major
    return encoder_states.reshape(W, frames // 4, 4, D).transpose(2, 3).reshape(W, frames // 4, 4 * D)


def _patch_merge(model: GlmAsrModel) -> contextlib.AbstractContextManager:
    stack = contextlib.ExitStack()
    for module in (glm_asr.model.glm_asr, ours):
        stack.enter_context(mock.patch.object(module, "merge_frames", _merge_channels_first))
    return stack


def _positions_from_zero(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ids = inputs["input_ids"]
    return {**inputs, "position_ids": torch.arange(ids.shape[1]).expand_as(ids).clone()}


def _prompt(text: str) -> Callable[[GlmAsrModel], contextlib.AbstractContextManager]:
    def prompt_text(n_audio_tokens: int, instruction: str = glm_asr.transcription.processor.INSTRUCTION) -> str:
        return text.replace("{pads}", glm_asr.transcription.processor.AUDIO_TOKEN * n_audio_tokens).replace("{instruction}", instruction)

    return lambda model: mock.patch.object(glm_asr.transcription.processor, "prompt_text", prompt_text)


def _rope_theta_10000(model: GlmAsrModel) -> contextlib.AbstractContextManager:
    real = glm_asr.model.rope.rope_cos_sin

    def rope(positions: torch.Tensor, rotary_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return real(positions, rotary_dim, 10000.0, dtype)

    stack = contextlib.ExitStack()
    for module in (glm_asr.model.encoder, glm_asr.model.decoder):
        stack.enter_context(mock.patch.object(module, "rope_cos_sin", rope))
    return stack


def _fp16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).to(t.dtype)


def _fp16_products(model: GlmAsrModel) -> contextlib.AbstractContextManager:
    """ggml's fp16 weights: a product with an fp16 weight converts its input to fp16 too (a convolution's
    im2col, a matmul's activations), then accumulates in fp32; biases stay fp32."""

    def conv(self, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return self._conv_forward(_fp16(x), _fp16(self.weight), self.bias)

    def linear(self, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return F.linear(_fp16(x), _fp16(self.weight), self.bias)

    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(glm_asr.runtime.dispatch.Conv1d, "forward", conv))
    stack.enter_context(mock.patch.object(glm_asr.runtime.dispatch.Linear, "forward", linear))
    return stack


def _one_more_frame(n_samples: int) -> int:
    return n_samples // glm_asr.model.front_end.HOP_LENGTH + 1


def _floor_conv_length(valid_frames: torch.Tensor) -> torch.Tensor:
    return valid_frames // 2 // 4  # floor(L / 2) frames after conv2 instead of ceil(L / 2)


def _floored_token_counts(model: GlmAsrModel) -> contextlib.AbstractContextManager:
    stack = contextlib.ExitStack()
    for module in (glm_asr.transcription.processor, glm_asr.model.glm_asr):  # both count the audio tokens, and must agree
        stack.enter_context(mock.patch.object(module, "audio_token_counts", _floor_conv_length))
    return stack


def _no_merges(model: GlmAsrModel) -> contextlib.AbstractContextManager:
    original = glm_asr.transcription.processor.Processor.__init__

    def init(self, tokenizer, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        original(self, tokenizer, *args, **kwargs)
        tokenizer._merges, tokenizer._cache = {}, {}

    return mock.patch.object(glm_asr.transcription.processor.Processor, "__init__", init)


BUGS: dict[str, Bug] = {
    "htk_mel": Bug("mel", "an HTK mel scale instead of Slaney", lambda m: mock.patch.object(glm_asr.model.front_end, "mel_filters", _htk_filters), front_end=True),
    "mel_unnormalised": Bug("mel", "mel filters of height 1 (no Slaney area normalisation)",
                            lambda m: mock.patch.object(glm_asr.model.front_end, "mel_filters", _unnormalised_filters), front_end=True),
    "symmetric_hann": Bug("mel", "a symmetric Hann window instead of the periodic one",
                          lambda m: mock.patch.object(torch, "hann_window", _symmetric_hann), front_end=True),
    "extra_valid_frame": Bug("input_features_mask", "n // 160 + 1 valid frames instead of ceil(n / 160): one more for clips "
                             "of a multiple of 160 samples", lambda m: mock.patch.object(glm_asr.model.front_end, "valid_frames", _one_more_frame),
                             front_end=True, visible="clips of a multiple of 160 samples: every case but odd_length and "
                             "frames_8k_minus_1", shown_by="tone/fp32"),
    "prompt_one_user": Bug("input_ids", "the prompt without its second <|user|>",
                           _prompt("<|user|>\n<|begin_of_audio|>{pads}<|end_of_audio|>\n{instruction}<|assistant|>\n"), front_end=True),
    "prompt_no_final_newline": Bug("input_ids", "the prompt without the newline after <|assistant|>",
                                   _prompt("<|user|>\n<|begin_of_audio|>{pads}<|end_of_audio|><|user|>\n{instruction}<|assistant|>"), front_end=True),
    "tokenizer_no_merges": Bug("input_ids", "a tokenizer that ignores its BPE merges (the instruction as single bytes)", _no_merges, front_end=True),
    "conv_length_floor": Bug("input_ids", "one <|pad|> short: the audio token count from floor(L / 2) frames after conv2 "
                             "instead of ceil(L / 2)", _floored_token_counts, front_end=True,
                             visible="frames_8k_minus_1 cases only: floor and ceil differ by a token only where L = 8k - 1",
                             shown_by="frames_8k_minus_1/fp32"),
    "fp16_products": Bug("conv1", "its weights and the inputs of every product with them rounded to fp16 (fp16 weights in ggml, "
                         "which converts a product's input to fp16 too)", _fp16_products,
                         visible="fp32 cases: within the bf16 tolerance"),
    "full_rotary": Bug("encoder.layers.", "RoPE on all head dims of the encoder instead of the first half", _full_rotary),
    "interleaved_rope": Bug("encoder.layers.", "interleaved RoPE pairs (2i, 2i+1) in the encoder instead of rotate-half (i, i + R/2)",
                            lambda m: mock.patch.object(glm_asr.model.encoder, "apply_rope", apply_rope_interleaved)),
    "tanh_gelu": Bug("encoder.layers.", "tanh-approximated GELU in the encoder MLP", _encoder_mlp_tanh),
    "layer_norm_eps_1e-6": Bug("encoder.layers.", "encoder LayerNorm eps 1e-6 instead of 1e-5",
                               lambda m: _set(_layer_norms(m), "eps", 1e-6)),
    "rope_theta_10000": Bug("encoder.layers.", "RoPE theta 10000 instead of the config's rope_theta", _rope_theta_10000),
    "merge_order": Bug("merged", "the 4 merged frames interleaved channel by channel instead of concatenated", _patch_merge),
    "decoder_interleaved_rope": Bug("decoder.layers.", "interleaved RoPE pairs (2i, 2i+1) in the decoder instead of rotate-half",
                                    lambda m: mock.patch.object(glm_asr.model.decoder, "apply_rope", apply_rope_interleaved)),
    "gqa_tiled": Bug("decoder.layers.", "query head h reading kv head h mod Hkv instead of h // (H / Hkv)",
                     lambda m: mock.patch.object(ScaledDotProductAttention, "forward", _tiled_gqa)),
    "positions_from_zero": Bug("decoder.layers.", "position ids 0..T-1 on left-padded rows instead of counting from the first real token",
                               inputs=_positions_from_zero,
                               visible="none: RoPE depends only on position differences, so shifting a row's positions changes "
                               "nothing but rounding (seen in the batch cases: within the fp32 tolerance)", shown_by="batch/fp32"),
    "no_padding_mask": Bug("decoder.layers.", "left-padding tokens attended to (their keys not masked)",
                           lambda m: mock.patch.object(glm_asr.model.decoder, "attention_mask", _causal_only),
                           visible="batch cases only: nothing else is left-padded", shown_by="batch/fp32"),
    "rms_norm_scale_before_cast": Bug("decoder.layers.", "RMSNorm multiplying by its weight before the cast back to bf16",
                                      lambda m: mock.patch.object(glm_asr.model.decoder.RMSNorm, "forward", _rms_scale_before_cast),
                                      visible="none: only bf16 shows it (nmse 8e-6), far inside the chained bf16 tolerance",
                                      shown_by="speech_like/bf16"),
    "rms_eps_outside_sqrt": Bug("decoder.layers.", "RMSNorm eps added after the square root instead of under it",
                                lambda m: mock.patch.object(glm_asr.model.decoder.RMSNorm, "forward", _rms_eps_outside_sqrt)),
}
BUGS.update({
    # Classic one-line bugs, each an op the kit's recomputation names on its own too (conformance/kit/ops.py).
    "encoder_silu": Bug("encoder.layers.", "SiLU instead of exact GELU in the encoder MLP", _encoder_mlp(F.silu)),
    "decoder_gelu": Bug("decoder.layers.", "GELU(gate) * up instead of SiLU(gate) * up in the decoder MLP", _decoder_mlp(lambda g, u: F.gelu(g) * u)),
    "gate_up_swapped": Bug("decoder.layers.", "SiLU(up) * gate: gate_proj and up_proj swapped in the decoder MLP",
                           _decoder_mlp(lambda g, u: F.silu(u) * g)),
    "rms_norm_eps_1e-6": Bug("decoder.layers.", "RMSNorm eps 1e-6 instead of the config's rms_norm_eps",
                             lambda m: _set(_rms_norms(m), "eps", 1e-6)),
    "encoder_attention_scale": Bug("encoder.layers.", "softmax scale 1/head_dim instead of 1/sqrt(head_dim) in the encoder attention",
                                   _scaled_attention(lambda m: m.audio_tower.layers)),
    "decoder_attention_scale": Bug("decoder.layers.", "softmax scale 1/head_dim instead of 1/sqrt(head_dim) in the decoder attention",
                                   _scaled_attention(lambda m: m.language_model.model.layers)),
    # Found in a real port (llama.cpp's GLM-ASR graph reuses Whisper's encoder, which has none: docs/llamacpp-port.md).
    "no_encoder_rope": Bug("encoder.layers.", "no RoPE in the encoder attention (Whisper's encoder has none; this one rotates q and k)",
                           lambda m: mock.patch.object(glm_asr.model.encoder, "apply_rope", lambda x, cos, sin: x)),
})
# Not here: a bias on the encoder's k_proj (conformance/harness/mutations.py `k_bias`). The checkpoint has none, so a
# port with one either fails to load it or adds zeros, which change nothing; there is no tensor to compare.


def matches_stage(bug: Bug, stage: str) -> bool:
    return stage == bug.stage or (bug.stage.endswith(".") and stage.startswith(bug.stage))
