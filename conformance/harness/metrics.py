"""Metrics for one stage: non-finite values first, then max abs error, its ratio to the reference's largest
magnitude, normalised squared error (llama.cpp's NMSE: sum (a - b)^2 / sum b^2) and the minimum cosine over
rows (vectors along the feature axis), which catches drift confined to a few frames or tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from conformance.harness.tolerances import Tolerance


@dataclass(frozen=True)
class Metrics:
    max_abs: float
    max_rel: float
    nmse: float
    min_cos: float
    problem: str | None = None  # shape mismatch or unmatched NaN/inf: fails before any number is read


def measure(ours: torch.Tensor, ref: torch.Tensor, feature_axis: int) -> Metrics:
    if tuple(ours.shape) != tuple(ref.shape):
        return Metrics(math.inf, math.inf, math.inf, -1.0, f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}")
    a, b = ours.double(), ref.double()
    bad_a, bad_b = ~torch.isfinite(a), ~torch.isfinite(b)
    if bad_a.any() or bad_b.any():
        if not torch.equal(bad_a, bad_b) or not torch.equal(a[bad_a].nan_to_num(), b[bad_b].nan_to_num()):
            return Metrics(math.inf, math.inf, math.inf, -1.0, f"{int(bad_a.sum())} non-finite values vs {int(bad_b.sum())} in the reference")
        a, b = a.masked_fill(bad_a, 0.0), b.masked_fill(bad_b, 0.0)
    diff = (a - b).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    energy = float((b * b).sum())
    nmse = float((diff * diff).sum()) / energy if energy > 0 else (0.0 if max_abs == 0 else math.inf)
    a_rows, b_rows = a.movedim(feature_axis, -1).flatten(0, -2), b.movedim(feature_axis, -1).flatten(0, -2)
    norms = a_rows.norm(dim=-1) * b_rows.norm(dim=-1)
    both_zero = (a_rows.norm(dim=-1) == 0) & (b_rows.norm(dim=-1) == 0)  # zeroed padding rows
    cos = torch.where(both_zero, 1.0, (a_rows * b_rows).sum(-1) / norms.clamp_min(1e-300))
    return Metrics(max_abs, max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf), nmse, float(cos.min()) if cos.numel() else 1.0)


def violation(name: str, value: float, op: str, bound: float) -> str:
    """"name value op bound" with as many digits as it takes (3 at least) for the bound to print exactly and
    the value to print differently from it: a violated bound never reads as `0.999999990 < 0.999999990`."""
    digits = next((d for d in range(3, 18) if float(f"{bound:.{d}g}") == bound and f"{value:.{d}g}" != f"{bound:.{d}g}"), 17)
    return f"{name} {value:.{digits}g} {op} {bound:.{digits}g}"


def failures(m: Metrics, tol: Tolerance) -> list[str]:
    """Which limits a stage breaks; empty when it passes."""
    if m.problem:
        return [m.problem]
    out = []
    if tol.max_abs is not None and m.max_abs > tol.max_abs:
        out.append(violation("max_abs", m.max_abs, ">", tol.max_abs))
    if tol.max_rel is not None and m.max_rel > tol.max_rel:
        out.append(violation("max_rel", m.max_rel, ">", tol.max_rel))
    if tol.nmse is not None and m.nmse > tol.nmse:
        out.append(violation("nmse", m.nmse, ">", tol.nmse))
    if tol.min_cos is not None and m.min_cos < tol.min_cos:
        out.append(violation("min_cos", m.min_cos, "<", tol.min_cos))
    return out
