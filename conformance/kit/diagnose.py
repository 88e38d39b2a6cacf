"""Diagnosis of a port's first diverging stage: the stage recomputed under each known porting bug
(conformance/kit/bugs.py), fed the reference's input to that stage; a bug whose result the port's tensor equals
within the stage's tolerance is named. Otherwise, the shape of the error: which windows or batch rows, which
frames or tokens, which channels carry it."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

import glm_asr
import glm_asr.model.front_end
from glm_asr.model.config import GlmAsrConfig

from conformance.kit.bugs import BUGS, Bug, matches_stage
from conformance.harness.metrics import failures, measure
from conformance.kit.export import MODE, KitStage, checkpoint_dir
from conformance.harness.ours import isolated_steps
from conformance.harness.stages import row_axis, select, stages
from conformance.harness.tolerances import tolerance

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FRONT_END = ("input_ids", "input_features_mask", "mel")


def _ranges(indices: list[int]) -> str:
    out, start = [], None
    for i, x in enumerate(indices):
        if start is None:
            start = x
        if i + 1 == len(indices) or indices[i + 1] != x + 1:
            out.append(f"{start}" if start == x else f"{start}-{x}")
            start = None
    return ", ".join(out[:6]) + (f", ... ({len(out)} runs)" if len(out) > 6 else "")


def error_shape(stage: KitStage, port: torch.Tensor, ref: torch.Tensor, positions: list[int] | None = None) -> str:
    """Where a float stage's error lives, in one line; `positions` maps the rows of a sampled stage back to
    their frame or token numbers."""
    s = stage.stage
    if tuple(port.shape) != tuple(ref.shape):
        return f"the shape is {tuple(port.shape)} where the reference has {tuple(ref.shape)}: check the layout in the kit's README"
    diff = (port.double() - ref.double()).nan_to_num(nan=float("inf"))
    rows = diff.movedim(s.feature_axis, -1)  # (lead, position, features) for 3-D stages
    ref_rows = ref.double().movedim(s.feature_axis, -1)
    rel = rows.norm(dim=-1) / ref_rows.norm(dim=-1).clamp_min(1e-30 + float(ref_rows.norm(dim=-1).max()) * 1e-6)
    bad = rel > float(rel.max()) * 0.1  # rows within an order of magnitude of the worst
    what = "frames" if s.frame_axis is not None else "tokens"
    lead = "window" if s.frame_axis is not None else "batch row"
    parts = []
    for i in range(rows.shape[0]):
        idx = bad[i].nonzero().flatten().tolist()
        idx = [positions[j] for j in idx] if positions is not None else idx
        if idx:
            parts.append(f"{lead} {i}: {len(idx)} of {bad.shape[1]} {what} ({_ranges(idx)})")
    energy = (rows.abs() ** 2).flatten(0, -2).sum(0)
    share = energy / energy.sum().clamp_min(1e-300)
    top = share.argsort(descending=True)[:4].tolist()
    spread = float(share[top].sum()) < 0.5 or share.numel() <= 4  # the 4 largest carry less than half
    channels = ("spread over all channels" if spread else
                "channels " + ", ".join(f"{c} ({float(share[c]):.0%})" for c in top) + " carry most of it")
    worst = [int(i) for i in (diff.abs() == diff.abs().max()).nonzero()[0]]
    if positions is not None:
        worst[row_axis(s)] = positions[worst[row_axis(s)]]
    worst = tuple(worst)
    where = f"{'; '.join(parts) or 'no row in particular'}" + (" of the rows kept" if positions is not None else "")
    return f"the error is in {where}; {channels}; largest at {worst}"


def diagnose_sampled(stage: KitStage, port: torch.Tensor, expected: dict[str, torch.Tensor], entry: dict) -> str:
    """A full-size case's first diverging stage: its kept rows are too few to recompute the stage under each
    known bug, so only where the error lies is said, and where a diagnosis can be had."""
    pointer = ("no known bug was tried (full-size cases keep too little of each stage to recompute it); the tiny cases "
               "of this kit recompute each stage under every known porting bug: run them for a diagnosis")
    if stage.exact:
        return pointer
    return f"{error_shape(stage, port, expected[stage.name], entry['rows']['index'] if 'rows' in entry else None)}; {pointer}"


@functools.lru_cache(maxsize=4)
def _model(checkpoint: Path, dtype: str) -> glm_asr.GlmAsrModel:
    return glm_asr.load_model(checkpoint, dtype=DTYPES[dtype])


class _Case:
    """A kit case's model, clips and the reference's stage inputs, in full along every frame axis."""

    def __init__(self, kit_dir: Path, case: dict, expected: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> None:
        self.folder = kit_dir / case["dir"]
        self.dtype, self.expected, self.inputs = case["dtype"], expected, inputs
        self.checkpoint = checkpoint_dir(kit_dir, case)
        self.model = _model(self.checkpoint, case["dtype"])
        self.clips = [glm_asr.load_audio(self.folder / c["file"]) for c in case["clips"]]
        self._ours: dict[str, torch.Tensor] | None = None

    def full_input(self, source: str, stage_list: dict) -> torch.Tensor:
        """The reference's `source` stage where the kit stores it; beyond its crop, our model's (equal within
        tolerance on every stored frame, which is all the reference kept)."""
        if source == "mel":
            return self.inputs["input_features"]
        ref, s = self.expected[source], stage_list[source]
        if self._ours is None:
            self._ours = self.run(None)
        ours = self._ours[source].float()
        if s.padded_tokens:  # the kit zeroes padding rows; a bug that unmasks them must see what a model puts there
            return torch.where(self.inputs["attention_mask"][..., None].bool(), ref, ours)
        full = ours.clone()
        full.narrow(s.frame_axis, 0, ref.shape[s.frame_axis]).copy_(ref)
        return full

    def run(self, bug: Bug | None) -> dict[str, torch.Tensor]:
        """Every stage of our model from the kit's inputs, chained, under `bug` (None: as it is)."""
        inputs = bug.inputs(self.inputs) if bug and bug.inputs else self.inputs
        with torch.inference_mode(), bug.patch(self.model) if bug else contextlib.nullcontext(), glm_asr.capture() as taps:
            self.model(inputs["input_ids"], inputs["input_features"].to(DTYPES[self.dtype]), inputs["input_features_mask"],
                       inputs["attention_mask"], inputs["position_ids"])
        return taps

    def chained(self, bug: Bug, stage: KitStage, stage_list: dict) -> torch.Tensor:
        """`stage` with `bug` in every stage from the bug's first one on, fed the reference's input to that one."""
        inputs = bug.inputs(self.inputs) if bug.inputs else self.inputs
        g = {f"inputs.{k}": v for k, v in inputs.items()}
        steps = isolated_steps(self.model)
        names = list(steps)
        start = names.index(bug.stage + "0" if bug.stage.endswith(".") else bug.stage)
        x = self.full_input(steps[names[start]][0], stage_list).to(DTYPES[self.dtype])
        with torch.inference_mode(), bug.patch(self.model):
            for name in names[start : names.index(stage.name) + 1]:
                x = steps[name][2](x, g)
        return select(stage.stage, x, self.inputs)

    def under(self, bug: Bug | None, stage: KitStage, stage_list: dict) -> torch.Tensor | None:
        """What `stage` gives under `bug` (None: as we compute it), prepared as the kit compares it; None where
        the bug cannot reach it."""
        if bug is not None and bug.front_end != (stage.name in FRONT_END):
            return None
        with torch.inference_mode(), bug.patch(self.model) if bug else contextlib.nullcontext():
            if stage.name in FRONT_END:
                processor = glm_asr.Processor.from_dir(self.checkpoint, self.model.config.audio_config.num_mel_bins)
                batch = processor(self.clips)
                made = {"input_ids": batch.input_ids, "input_features_mask": batch.input_features_mask, "mel": batch.input_features}
                return made[stage.name] if stage.exact else select(stage.stage, made[stage.name], self.inputs)
            inputs = bug.inputs(self.inputs) if bug and bug.inputs else self.inputs
            source, _, step = isolated_steps(self.model)[stage.name]
            g = {f"inputs.{k}": v for k, v in inputs.items()}
            out = step(self.full_input(source, stage_list).to(DTYPES[self.dtype]), g)
            return select(stage.stage, out, self.inputs)


def _equal(stage: KitStage, a: torch.Tensor, b: torch.Tensor, dtype: str) -> bool:
    if stage.exact:
        return tuple(a.shape) == tuple(b.shape) and torch.equal(a.long(), b.long())
    return not failures(measure(a, b, stage.stage.feature_axis), tolerance(stage.name, dtype, MODE))


def matching_bugs(kit_dir: Path, case: dict, config: GlmAsrConfig, stage: KitStage, port: torch.Tensor,
                  expected: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> tuple[list[str], bool]:
    """Names of the known bugs under which `stage` gives the port's tensor within the stage's tolerance (bugs
    that do not change this stage are skipped), and whether our own computation of it, fed the same input,
    equals the port's."""
    if stage.name == "generated_ids":
        return [], False
    stage_list = {s.name: s for s in stages(config)}
    data = _Case(kit_dir, case, expected, inputs)
    ours = data.under(None, stage, stage_list)
    found = []
    for name, bug in BUGS.items():
        made = data.under(bug, stage, stage_list)
        if made is not None and _equal(stage, port, made, case["dtype"]) and not _equal(stage, ours, made, case["dtype"]):
            found.append(name)
    if not found and stage.name not in FRONT_END:
        # A bug too small to fail the stages before this one may still have moved its input more than the
        # tolerance allows here: compare with the bug applied from its first stage on as well.
        for name, bug in BUGS.items():
            if not bug.front_end and matches_stage(bug, stage.name):
                made = data.chained(bug, stage, stage_list)
                if _equal(stage, port, made, case["dtype"]) and not _equal(stage, ours, made, case["dtype"]):
                    found.append(name)
    return found, _equal(stage, port, ours, case["dtype"])


def diagnose(kit_dir: Path, case: dict, config: GlmAsrConfig, stage: KitStage, port: torch.Tensor,
             expected: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> str | None:
    """One line on the first diverging stage: the known bug it equals, or where its error lies."""
    found, like_ours = matching_bugs(kit_dir, case, config, stage, port, expected, inputs)
    if found:
        return " and ".join(f"{stage.name} equals the reference with {BUGS[n].says} (known bug `{n}`)" for n in found)
    if stage.name == "generated_ids":
        return "only the greedy ids differ: dump logits and the stages before them to see where"
    if like_ours:
        return (f"{stage.name} equals glm-asr's own computation on this machine, fed the same input: a numerical "
                "difference from the reference's machine (another FFT or BLAS code path), not a known porting bug")
    if stage.exact:
        return "no known bug matches"
    return f"no known bug matches; {error_shape(stage, port, expected[stage.name])}"


def _port_input(data: _Case, source: str, stage_list: dict, results: dict[str, torch.Tensor]) -> tuple[torch.Tensor, str]:
    """The stage's input as the port computed it, in full, and which it is: the port's `source` tensor where it
    gave it at the uncropped shape (left-padding rows, which it may leave as anything, from our model), the
    kit's (the reference's) otherwise."""
    full = data.full_input(source, stage_list)
    got = results.get(source if source != "mel" else "mel")
    if got is None or tuple(got.shape) != tuple(full.shape) or not torch.isfinite(got.float()).all():
        return full, ("the kit's input_features, the port gave no mel" if source == "mel" else f"the reference's {source}, since the port gave no usable {source}")
    got = got.to(full.dtype)
    s = stage_list.get(source)
    if s is not None and s.padded_tokens:
        got = torch.where(data.inputs["attention_mask"][..., None].bool(), got, full)
    return got, f"its {source}"


def locate(kit_dir: Path, case: dict, stage: KitStage, results: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
           inputs: dict[str, torch.Tensor]) -> str | None:
    """The first wrong operation inside `stage`, recomputed from the port's own input (conformance/kit/localise.py)."""
    from conformance.kit.localise import localise

    data = _Case(kit_dir, case, expected, inputs)
    if stage.name == "mel":  # its input is the audio: the case's clips, cut into zero-padded 30 s windows
        pieces = [p for clip in data.clips for p in glm_asr.model.front_end.split_windows(torch.as_tensor(clip, dtype=torch.float32))]
        windows = torch.zeros(len(pieces), glm_asr.model.front_end.WINDOW_SAMPLES)
        for i, p in enumerate(pieces):
            windows[i, : p.shape[0]] = p
        return localise(data.model, stage.stage, windows, results, inputs, "fp32", "the case's WAV files")
    stage_list = {s.name: s for s in stages(data.model.config)}
    steps = isolated_steps(data.model)
    if stage.name not in steps:
        return None
    x, said = _port_input(data, steps[stage.name][0], stage_list, results)
    return localise(data.model, stage.stage, x.to(DTYPES[data.dtype]), results, inputs, data.dtype, said)
