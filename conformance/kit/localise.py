"""The first wrong operation inside a failing stage, for any bug.

The stage is recomputed op by op (conformance/kit/ops.py) on the kit's reference weights, from the port's OWN
input to the stage, so an error that came in with the input is not blamed on the stage. Where the port gave a
sub-stage tensor, the reference's op fed the port's values is compared with it: the first op whose input is
right and whose output is not is the wrong one. Between two sub-stages the port did not give (or with none at
all), each op of that stretch is recomputed under its classic one-line variants (a norm's eps, an activation,
a bias, the attention's scale and RoPE, the residual); a variant under which the stage gives the port's
tensor names the op and what it does instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch

from glm_asr.model.glm_asr import GlmAsrModel

from conformance.harness.metrics import failures, measure
from conformance.harness.stages import Stage, select
from conformance.harness.tolerances import Tolerance, tolerance
from conformance.kit.ops import Op, stage_ops


_FRONT_END_STEP = Tolerance(None, 1e-5, 1e-10, 1 - 1e-9, "a power spectrum or filterbank output fed the port's own input: "
                            "FFT and GEMM rounding in fp32 (1e-7 relative) with 100x headroom for another FFT library; "
                            "a wrong window or filterbank moves it by 1e-3 or more")


def stage_words(name: str) -> str:
    for side in ("encoder", "decoder"):
        if name.startswith(f"{side}.layers."):
            return f"{side} layer {name.rsplit('.', 1)[1]}"
    return {"encoder.norm": "the encoder's final norm", "decoder.norm": "the decoder's final norm", "merged": "the frame merge",
            "projector": "the projector", "logits": "logits", "mel": "the front end (mel)"}.get(name, name)


class _Compare:
    def __init__(self, stage: Stage, inputs: dict[str, torch.Tensor], dtype: str) -> None:
        self.stage, self.inputs = stage, inputs
        # one op's rounding, fed the same input; the front end has no isolated entry: its features keep the
        # chained mel limits, its power spectrum and filterbank output the scale-free _FRONT_END_STEP
        self.tol = tolerance(stage.name, dtype, "chained" if stage.name == "mel" else "isolated")

    def limits(self, op: Op | None) -> Tolerance:
        return _FRONT_END_STEP if self.stage.name == "mel" and op is not None and op.name else self.tol

    def differs(self, name: str, port: torch.Tensor, want: torch.Tensor, op: Op | None = None) -> str | None:
        """Why the port's tensor is not the op's output (None: within the isolated tolerance)."""
        if tuple(port.shape) != tuple(want.shape):
            return f"the port's {name} has shape {tuple(port.shape)} where the op gives {tuple(want.shape)}"
        s = replace(self.stage, name=name)
        if op is not None and op.axes is not None:
            s = replace(s, frame_axis=op.axes[0], feature_axis=op.axes[1])
        problems = failures(measure(select(s, port, self.inputs), select(s, want, self.inputs), s.feature_axis), self.limits(op))
        return "; ".join(problems) or None


def _run(ops: list[Op], values: dict[str, torch.Tensor], start: int, stop: int, swap: dict[int, Callable]) -> torch.Tensor:
    """Ops start..stop (inclusive) from `values`, op i computed by swap[i] where given; the last one's output."""
    v = dict(values)
    for i in range(start, stop + 1):
        v[ops[i].name] = swap.get(i, ops[i].fn)(v)
    return v[ops[stop].name]


def _variants(ops: list[Op], v: dict[str, torch.Tensor], lo: int, hi: int, port: torch.Tensor, check: _Compare,
              target: str) -> list[tuple[str, str]]:
    """(which ops, variant) under which ops lo..hi give the port's tensor at op hi: one op changed, or every op
    of a kind (a layer's norms share their eps and formula in most ports' code)."""
    tries = [(ops[i].words, what, {i: fn}) for i in range(lo, hi + 1) for what, fn in ops[i].variants.items()]
    for kind in sorted({op.kind for op in ops[lo : hi + 1] if op.kind}):
        same = [i for i in range(lo, hi + 1) if ops[i].kind == kind]
        if len(same) > 1:
            shared = set.intersection(*(set(ops[i].variants) for i in same))
            words = f"every {kind} of the stage ({' and '.join(ops[i].words for i in same)})"
            tries += [(words, what, {i: ops[i].variants[what] for i in same}) for what in sorted(shared)]
    found = []
    for words, what, swap in tries:
        try:
            made = _run(ops, v, lo, hi, swap)
        except RuntimeError:  # a variant that cannot apply to this input's shape
            continue
        if check.differs(target, port, made, ops[hi]) is None:
            gap = float((made.double() - port.double()).abs().max()) if made.shape == port.shape else math.inf
            found.append((gap, words, what))
    # Closest first: several variants can pass the tolerance (eps 1e-12, 1e-8 and 1e-6 under a config's 1e-2), and
    # the port's own is the one that gives its tensor exactly.
    return [(words, what) for _, words, what in sorted(found, key=lambda f: f[0])]


def localise(model: GlmAsrModel, stage: Stage, x: torch.Tensor, port: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor],
             dtype: str, source: str) -> str | None:
    """One line: which operation of `stage` first departs from the port. `x` is the stage's input (the port's
    own where it gave it, `source` says which); `port` the port's tensors (stage and sub-stages, as given)."""
    with torch.inference_mode():
        ops = stage_ops(model, stage.name, x, inputs)
        if ops is None:
            return None
        check, where = _Compare(stage, inputs, dtype), stage_words(stage.name)
        v: dict[str, torch.Tensor] = {"input": x}
        pending: list[int] = []  # ops the port did not give, not yet vouched for by a later op it gave
        for i, op in enumerate(ops):
            key = f"{stage.name}.{op.name}" if op.name else stage.name
            want = op.fn(v)
            if key not in port:
                v[op.name] = want
                pending.append(i)
                continue
            got = port[key].to(want.dtype)
            why = check.differs(key, got, want, op)
            if why is not None:
                return _verdict(ops, v, min(pending, default=i), i, got, check, key, where, source, why)
            v[op.name] = got
            pending = [j for j in pending if _sibling(ops[j], op)]  # a right output vouches for what it read
        return (f"{where}: fed the port's own input ({source}), every operation gives the port's output within one op's rounding: "
                "the error came in with the input, inside the previous stage's tolerance, and grew here")


_SIBLINGS = ({"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}, {"mlp.gate_proj", "mlp.up_proj"})


def _sibling(a: Op, b: Op) -> bool:
    """Two projections of the same input: neither reads the other, so a right one vouches nothing for the other."""
    return any(a.name in group and b.name in group for group in _SIBLINGS)


def _verdict(ops: list[Op], v: dict[str, torch.Tensor], lo: int, bad: int, got: torch.Tensor, check: _Compare,
             key: str, where: str, source: str, why: str) -> str:
    """The wrong op is among lo..bad: the ops the port did not give since the last one it gave and vouched for."""
    found = _variants(ops, v, lo, bad, got, check, key)
    if lo == bad:
        op = ops[bad]
        line = f"{where}: {op.words}: its input is right, its output is wrong ({why})"
        return line + "".join(f"; it equals the reference with {what}" for _, what in found[:2])
    stretch = ops[lo : bad + 1]
    if found:
        names = " or ".join(f"{words} computed with {what}" for words, what in found[:3])
        return (f"{where}: {names}: fed the port's own input ({source}), the stage equals the port's "
                f"with that change alone, every other operation as the reference's")
    stage_name = key.removesuffix(f".{ops[bad].name}") if ops[bad].name else key
    missing = [f"{stage_name}.{op.name}" for op in stretch if op.name]
    return (f"{where}: fed the port's own input ({source}), the reference's operations do not give the port's "
            f"{'output' if not ops[bad].name else ops[bad].name} ({why}); the error is in one of {len(stretch)} operations, "
            f"from {stretch[0].words} to {stretch[-1].words}, and no one-op variant the kit knows matches"
            + (f"; give the sub-stage tensors {missing[0]} .. {missing[-1]} (README: Sub-stages) to name the operation" if missing else ""))

