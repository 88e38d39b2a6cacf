"""Each stage as its operations, one by one, on the kit's reference weights: the names of the sub-stage
tensors a port may give, and the recomputation that finds the first operation whose output departs from
the port's (conformance/kit/localise.py).

An operation reads named values ("input": the stage's input; others: earlier operations of the same stage)
and carries its classic one-line variants: what a port that got this one op wrong would compute instead.
The variants are generic (every norm's eps, every activation, every linear's bias, the attention's scale and
RoPE), not the catalogue's bugs (conformance/kit/bugs.py), so a bug the catalogue has never seen is still
named when it is one of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from glm_asr.model import front_end
from glm_asr.model.config import GlmAsrConfig
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.model.projector import merge_frames
from glm_asr.model.rope import apply_rope, rope_cos_sin
from glm_asr.runtime.dispatch import Attention

from conformance.harness.rope_variants import apply_rope_interleaved

Values = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Op:
    name: str  # "<stage>.<name>" is its sub-stage tensor; "" is the stage's own output
    words: str  # "the MLP's activation (GELU)"
    fn: Callable[[Values], torch.Tensor]
    variants: dict[str, Callable[[Values], torch.Tensor]] = field(default_factory=dict)  # "<what>" -> fn
    kind: str = ""  # ops of one kind in a stage (its norms) share variants: a port gets them wrong together
    axes: tuple[int, int] | None = None  # (frame axis, feature axis) where not the stage's: conv2 before its transpose


# Sub-stage names per layer, in order; "" is the layer's output (the stage itself).
ENCODER_LAYER_OPS = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.context",
                     "self_attn", "attn_residual", "post_attention_layernorm", "mlp.fc1", "mlp.act", "mlp")
DECODER_LAYER_OPS = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.context",
                     "self_attn", "attn_residual", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.act", "mlp")
OTHER_OPS = {"conv1": ("conv",), "conv2": ("conv",), "projector": ("linear_1", "act")}


def sub_stage_names(config: GlmAsrConfig) -> list[str]:
    """Every optional sub-stage tensor name of a model, in pipeline order."""
    names = ["mel.power", "mel.filtered"] + [f"{s}.{o}" for s in ("conv1", "conv2") for o in OTHER_OPS[s]]
    names += [f"encoder.layers.{i}.{o}" for i in range(config.audio_config.num_hidden_layers) for o in ENCODER_LAYER_OPS]
    names += [f"projector.{o}" for o in OTHER_OPS["projector"]]
    names += [f"decoder.layers.{i}.{o}" for i in range(config.text_config.num_hidden_layers) for o in DECODER_LAYER_OPS]
    return names


def _eps_variants(norm: torch.nn.Module, apply: Callable[[torch.Tensor, float], torch.Tensor], key: str) -> dict:
    return {f"eps {eps:g} instead of {norm.eps:g}": (lambda v, eps=eps: apply(v[key], eps))
            for eps in (1e-12, 1e-8, 1e-6, 1e-5, 1e-3) if not math.isclose(eps, norm.eps)}


def _layer_norm_op(name: str, words: str, norm: torch.nn.LayerNorm, key: str) -> Op:
    def ln(x: torch.Tensor, eps: float) -> torch.Tensor:
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, eps)

    def rms(x: torch.Tensor) -> torch.Tensor:  # no mean subtracted
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight + norm.bias).to(x.dtype)

    return Op(name, words, lambda v: ln(v[key], norm.eps), kind="LayerNorm", variants={
        **_eps_variants(norm, ln, key),
        "no mean subtracted (an RMSNorm instead of a LayerNorm)": lambda v: rms(v[key]),
        "no bias": lambda v: F.layer_norm(v[key], norm.normalized_shape, norm.weight, None, norm.eps),
        "(1 + weight) as the scale": lambda v: F.layer_norm(v[key], norm.normalized_shape, norm.weight + 1, norm.bias, norm.eps),
    })


def _rms_norm_op(name: str, words: str, norm: torch.nn.Module, key: str) -> Op:
    def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x.float()
        return norm.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def outside(x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return norm.weight * (x32 / (x32.pow(2).mean(-1, keepdim=True).sqrt() + norm.eps)).to(x.dtype)

    def centred(x: torch.Tensor) -> torch.Tensor:
        return norm.weight * F.layer_norm(x.float(), x.shape[-1:], eps=norm.eps).to(x.dtype)

    return Op(name, words, lambda v: rms(v[key], norm.eps), kind="RMSNorm", variants={
        **_eps_variants(norm, rms, key),
        "eps added after the square root instead of under it": lambda v: outside(v[key]),
        "the mean subtracted (a LayerNorm instead of an RMSNorm)": lambda v: centred(v[key]),
        "(1 + weight) as the scale": lambda v: (norm.weight + 1) * rms(v[key], norm.eps) / norm.weight,
    })


def _linear_op(name: str, words: str, linear: torch.nn.Linear, key: str) -> Op:
    variants = {"no bias": lambda v: F.linear(v[key], linear.weight)} if linear.bias is not None else {}
    return Op(name, words, lambda v: linear(v[key]), variants)


def _activations(key: str, real: str) -> dict[str, Callable[[Values], torch.Tensor]]:
    made = {
        "exact (erf) GELU": lambda v: F.gelu(v[key]),
        "tanh-approximated GELU": lambda v: F.gelu(v[key], approximate="tanh"),
        "quick GELU (x * sigmoid(1.702 x))": lambda v: v[key] * torch.sigmoid(1.702 * v[key]),
        "SiLU": lambda v: F.silu(v[key]),
        "ReLU": lambda v: F.relu(v[key]),
    }
    return {f"{what} instead of {real}": fn for what, fn in made.items() if what != real}


def _heads(t: torch.Tensor, n: int) -> torch.Tensor:
    B, T, _ = t.shape
    return t.view(B, T, n, -1).transpose(1, 2)  # (B, H, T, Dh)


_ATTENTION = Attention()  # the model's attention on the kernels our model runs, so a recomputed op rounds as ours does

def _core(v: Values, n_heads: int, n_kv: int, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
          rope: Callable = apply_rope, scale: float = 1.0, tiled: bool = False) -> torch.Tensor:
    """RoPE, softmax(q k^T / sqrt(Dh)) v over heads; `scale` multiplies q on top (a wrong softmax scale)."""
    q, k, val = _heads(v["self_attn.q_proj"], n_heads), _heads(v["self_attn.k_proj"], n_kv), _heads(v["self_attn.v_proj"], n_kv)
    q, k = rope(q, cos, sin) * scale, rope(k, cos, sin)
    if tiled:
        k, val = k.repeat(1, n_heads // n_kv, 1, 1), val.repeat(1, n_heads // n_kv, 1, 1)
    out = _ATTENTION(q, k, val, mask)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def _attention_ops(attn: torch.nn.Module, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                   rope_table: Callable[[int, float], tuple[torch.Tensor, torch.Tensor]], rotary_dim: int, theta: float,
                   causal_variant: torch.Tensor | None, unmasked: torch.Tensor | None) -> list[Op]:
    H, Hkv, Dh = attn.num_heads, attn.num_kv_heads, attn.head_dim

    def core(**kw) -> Callable[[Values], torch.Tensor]:  # noqa: ANN003
        kw = {"cos": cos, "sin": sin, "mask": mask, **kw}
        return lambda v: _core(v, H, Hkv, **kw)

    variants = {
        "softmax scale 1/head_dim instead of 1/sqrt(head_dim)": core(scale=1 / math.sqrt(Dh)),
        "no softmax scale (1 instead of 1/sqrt(head_dim))": core(scale=math.sqrt(Dh)),
        "interleaved RoPE pairs (2i, 2i+1) instead of rotate-half (i, i + R/2)": core(rope=apply_rope_interleaved),
        "no RoPE": core(rope=lambda x, c, s: x),
    }
    if rotary_dim != Dh:
        full = rope_table(Dh, theta)
        variants["RoPE on all head dims instead of the first rotary_dim"] = core(cos=full[0], sin=full[1])
        variants["RoPE's frequency exponent over head_dim instead of the rotary dims"] = core(
            *(), **dict(zip(("cos", "sin"), rope_table(rotary_dim, theta, Dh))))
    if theta != 10000.0:
        c, s = rope_table(rotary_dim, 10000.0)
        variants["RoPE theta 10000 instead of the config's rope_theta"] = core(cos=c, sin=s)
    if Hkv != H:
        variants["query head h reading kv head h mod Hkv instead of h // (H / Hkv)"] = core(tiled=True)
    if causal_variant is not None:
        variants["a causal mask (the encoder attends to every frame)"] = core(mask=causal_variant)
    if unmasked is not None:
        variants["left-padding keys attended to (not masked)"] = core(mask=unmasked)
    return [
        _linear_op("self_attn.q_proj", "the query projection (q_proj)", attn.q_proj, "input_layernorm"),
        _linear_op("self_attn.k_proj", "the key projection (k_proj)", attn.k_proj, "input_layernorm"),
        _linear_op("self_attn.v_proj", "the value projection (v_proj)", attn.v_proj, "input_layernorm"),
        Op("self_attn.context", "the attention itself (RoPE on q and k, softmax(q k^T / sqrt(head_dim)), times v)", core(), variants),
        _linear_op("self_attn", "the attention's output projection (o_proj)", attn.o_proj, "self_attn.context"),
        Op("attn_residual", "the attention's residual add (input + attention)", lambda v: v["input"] + v["self_attn"], {
            "the normalised input as the residual (input_layernorm + attention)": lambda v: v["input_layernorm"] + v["self_attn"],
            "no residual (the attention output alone)": lambda v: v["self_attn"],
        }),
    ]


def _residual_out() -> Op:
    return Op("", "the MLP's residual add (attn_residual + MLP)", lambda v: v["attn_residual"] + v["mlp"], {
        "the normalised input as the residual (post_attention_layernorm + MLP)": lambda v: v["post_attention_layernorm"] + v["mlp"],
        "no residual (the MLP output alone)": lambda v: v["mlp"],
        "the layer's input as the residual (input + MLP, the attention's add lost)": lambda v: v["input"] + v["mlp"],
    })


def encoder_layer_ops(model: GlmAsrModel, i: int, x: torch.Tensor) -> list[Op]:
    tower, layer = model.audio_tower, model.audio_tower.layers[i]
    c = tower.config
    T = x.shape[1]

    def table(rotary: int, theta: float, denominator: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if denominator is None:
            return rope_cos_sin(torch.arange(T), rotary, theta, x.dtype)
        inv = 1.0 / (theta ** (torch.arange(0, rotary, 2, dtype=torch.float) / denominator))
        emb = torch.cat([torch.arange(T).float()[:, None] * inv] * 2, dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    cos, sin = tower.rope(T, x)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    mlp = layer.mlp
    return [
        _layer_norm_op("input_layernorm", "the attention's input norm (input_layernorm, a LayerNorm)", layer.input_layernorm, "input"),
        *_attention_ops(layer.self_attn, cos, sin, None, table, c.rotary_dim, c.rope_theta, causal, None),
        _layer_norm_op("post_attention_layernorm", "the MLP's input norm (post_attention_layernorm, a LayerNorm)",
                       layer.post_attention_layernorm, "attn_residual"),
        _linear_op("mlp.fc1", "the MLP's first linear (fc1)", mlp.fc1, "post_attention_layernorm"),
        Op("mlp.act", "the MLP's activation (exact GELU)", lambda v: F.gelu(v["mlp.fc1"]), _activations("mlp.fc1", "exact (erf) GELU")),
        _linear_op("mlp", "the MLP's second linear (fc2)", mlp.fc2, "mlp.act"),
        _residual_out(),
    ]


def decoder_layer_ops(model: GlmAsrModel, i: int, x: torch.Tensor, inputs: dict[str, torch.Tensor]) -> list[Op]:
    decoder, layer = model.language_model.model, model.language_model.model.layers[i]
    c = decoder.config
    positions, valid, T = inputs["position_ids"], inputs["attention_mask"], x.shape[1]
    cos, sin, mask = decoder.context(positions, valid, T, 0, x.dtype)

    def table(rotary: int, theta: float, denominator: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rope_cos_sin(positions, rotary, theta, x.dtype)
        return cos[:, None], sin[:, None]

    unmasked = decoder.context(positions, torch.ones_like(valid), T, 0, x.dtype)[2]
    mlp = layer.mlp
    act = {
        "SiLU(up) * gate (gate and up swapped)": lambda v: F.silu(v["mlp.up_proj"]) * v["mlp.gate_proj"],
        "GELU(gate) * up instead of SiLU(gate) * up": lambda v: F.gelu(v["mlp.gate_proj"]) * v["mlp.up_proj"],
        "tanh GELU(gate) * up instead of SiLU(gate) * up": lambda v: F.gelu(v["mlp.gate_proj"], approximate="tanh") * v["mlp.up_proj"],
        "SiLU(gate) alone (up dropped)": lambda v: F.silu(v["mlp.gate_proj"]),
        "ReLU(gate) * up instead of SiLU(gate) * up": lambda v: F.relu(v["mlp.gate_proj"]) * v["mlp.up_proj"],
    }
    return [
        _rms_norm_op("input_layernorm", "the attention's input norm (input_layernorm, an RMSNorm)", layer.input_layernorm, "input"),
        *_attention_ops(layer.self_attn, cos, sin, mask, table, c.head_dim, c.rope_theta, None, unmasked),
        _rms_norm_op("post_attention_layernorm", "the MLP's input norm (post_attention_layernorm, an RMSNorm)",
                     layer.post_attention_layernorm, "attn_residual"),
        _linear_op("mlp.gate_proj", "the MLP's gate projection (gate_proj)", mlp.gate_proj, "post_attention_layernorm"),
        _linear_op("mlp.up_proj", "the MLP's up projection (up_proj)", mlp.up_proj, "post_attention_layernorm"),
        Op("mlp.act", "the MLP's gated activation (SiLU(gate) * up)", lambda v: F.silu(v["mlp.gate_proj"]) * v["mlp.up_proj"], act),
        _linear_op("mlp", "the MLP's down projection (down_proj)", mlp.down_proj, "mlp.act"),
        _residual_out(),
    ]


def _conv_ops(conv: torch.nn.Conv1d, transpose: bool) -> list[Op]:
    out = (lambda t: t.transpose(1, 2)) if transpose else (lambda t: t)
    return [
        Op("conv", "the convolution (before its GELU)", lambda v: conv(v["input"]), {"no bias": lambda v: conv._conv_forward(v["input"], conv.weight, None)},
           axes=(2, 1)),  # (W, Da, F) channels first, as conv1
        Op("", "the GELU after the convolution" + (" and the transpose to frames first" if transpose else ""),
           lambda v: out(F.gelu(v["conv"])), {k: (lambda v, f=f: out(f({"x": v["conv"]}))) for k, f in _activations("x", "exact (erf) GELU").items()}),
    ]


def mel_ops(n_mels: int) -> list[Op]:
    """The front end on (W, 480000) zero-padded windows of samples: power spectrum, filterbank, log and clamp."""
    from conformance.kit.bugs import _htk_filters, _unnormalised_filters  # the catalogue's filterbanks, as variants here

    def power(v: Values, periodic: bool = True, exponent: int = 2) -> torch.Tensor:
        hann = torch.hann_window(front_end.N_FFT, periodic=periodic)
        stft = torch.stft(v["input"], front_end.N_FFT, front_end.HOP_LENGTH, window=hann, center=True, pad_mode="reflect", return_complex=True)
        return (stft[..., :-1].abs() ** exponent).contiguous()  # (W, 201, 3000)

    def filtered(v: Values, filters: object = front_end.mel_filters) -> torch.Tensor:
        return torch.from_numpy(filters(n_mels)).float().T @ v["mel.power"]

    def log(v: Values, log_fn: Callable = torch.log10, floor: float | None = 8.0) -> torch.Tensor:
        spec = log_fn(torch.clamp(v["mel.filtered"], min=1e-10))
        if floor is not None:
            spec = torch.maximum(spec, spec.amax(dim=(1, 2), keepdim=True) - floor)
        return (spec + 4.0) / 4.0

    return [
        Op("mel.power", "the power spectrum (STFT with a periodic Hann window, |X|^2)", power, {
            "a symmetric Hann window instead of the periodic one": lambda v: power(v, periodic=False),
            "the magnitude |X| instead of the power |X|^2": lambda v: power(v, exponent=1)}, axes=(2, 1)),
        Op("mel.filtered", "the mel filterbank (Slaney scale, Slaney-normalised)", filtered, {
            "an HTK mel scale instead of Slaney": lambda v: filtered(v, _htk_filters),
            "filters of height 1 (no Slaney area normalisation)": lambda v: filtered(v, _unnormalised_filters)}, axes=(2, 1)),
        Op("", "the log10, the clamp at the window's maximum minus 8 and (x + 4) / 4", log, {
            "the natural log instead of log10": lambda v: log(v, torch.log),
            "no clamp at the window's maximum minus 8": lambda v: log(v, floor=None)}),
    ]


def stage_ops(model: GlmAsrModel, stage: str, x: torch.Tensor, inputs: dict[str, torch.Tensor]) -> list[Op] | None:
    """The operations of `stage` fed `x` (its input; for `mel`, the windows of samples); None for a stage not
    split into operations here."""
    if stage == "mel":
        return mel_ops(model.config.audio_config.num_mel_bins)
    if stage == "conv1":
        return _conv_ops(model.audio_tower.conv1, False)
    if stage == "conv2":
        return _conv_ops(model.audio_tower.conv2, True)
    if stage.startswith("encoder.layers."):
        return encoder_layer_ops(model, int(stage.rsplit(".", 1)[1]), x)
    if stage.startswith("decoder.layers."):
        return decoder_layer_ops(model, int(stage.rsplit(".", 1)[1]), x, inputs)
    if stage == "encoder.norm":
        return [_layer_norm_op("", "the encoder's final LayerNorm", model.audio_tower.norm, "input")]
    if stage == "decoder.norm":
        return [_rms_norm_op("", "the decoder's final RMSNorm", model.language_model.model.norm, "input")]
    if stage == "merged":
        def channels_first(v: Values) -> torch.Tensor:
            W, frames, D = v["input"].shape
            return v["input"][:, : frames // 4 * 4].reshape(W, frames // 4, 4, D).transpose(2, 3).reshape(W, frames // 4, 4 * D)
        return [Op("", "the merge of 4 encoder frames into one token", lambda v: merge_frames(v["input"][:, : v["input"].shape[1] // 4 * 4]),
                   {"the 4 frames interleaved channel by channel instead of concatenated": channels_first})]
    if stage == "projector":
        p = model.multi_modal_projector
        return [_linear_op("linear_1", "the projector's first linear (linear_1)", p.linear_1, "input"),
                Op("act", "the projector's activation (exact GELU)", lambda v: F.gelu(v["linear_1"]), _activations("linear_1", "exact (erf) GELU")),
                _linear_op("", "the projector's second linear (linear_2)", p.linear_2, "act")]
    if stage == "logits":
        lm = model.language_model
        variants = {}
        if lm.lm_head.weight is not lm.model.embed_tokens.weight:
            variants["the token embeddings as the LM head (tied, where the config says untied)"] = lambda v: F.linear(v["input"], lm.model.embed_tokens.weight)
        return [Op("", "the LM head", lambda v: lm.lm_head(v["input"]), variants)]
    return None
