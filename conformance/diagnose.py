"""Diagnosis of a port's first diverging stage: the shape of its error (which windows or batch rows, which
frames or tokens, which channels carry it)."""

from __future__ import annotations

from pathlib import Path

import torch

from glm_asr.config import GlmAsrConfig

from .kit import KitStage


def _ranges(indices: list[int]) -> str:
    out, start = [], None
    for i, x in enumerate(indices):
        if start is None:
            start = x
        if i + 1 == len(indices) or indices[i + 1] != x + 1:
            out.append(f"{start}" if start == x else f"{start}-{x}")
            start = None
    return ", ".join(out[:6]) + (f", ... ({len(out)} runs)" if len(out) > 6 else "")


def error_shape(stage: KitStage, port: torch.Tensor, ref: torch.Tensor) -> str:
    """Where a float stage's error lives, in one line."""
    s = stage.stage
    if tuple(port.shape) != tuple(ref.shape):
        return f"shape {tuple(port.shape)} where the reference has {tuple(ref.shape)}: check the layout in the kit's README"
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
        if idx:
            parts.append(f"{lead} {i}: {len(idx)} of {bad.shape[1]} {what} ({_ranges(idx)})")
    energy = (rows.abs() ** 2).flatten(0, -2).sum(0)
    share = energy / energy.sum().clamp_min(1e-300)
    top = share.argsort(descending=True)[:4].tolist()
    spread = float(share.max()) < 4.0 / share.numel() or share.numel() <= 4
    channels = ("spread over all channels" if spread else
                "channels " + ", ".join(f"{c} ({float(share[c]):.0%})" for c in top) + " carry most of it")
    worst = tuple(int(i) for i in (diff.abs() == diff.abs().max()).nonzero()[0])
    return f"no known bug matches; the error is in {'; '.join(parts) or 'no row in particular'}; {channels}; largest at {worst}"


def diagnose(kit_dir: Path, case: dict, config: GlmAsrConfig, stage: KitStage, port: torch.Tensor,
             expected: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> str | None:
    if stage.exact:
        return None
    return error_shape(stage, port, expected[stage.name])
