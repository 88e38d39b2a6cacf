"""How far a regenerated golden tree is from the stored one (`tools/regenerate_golden.py --check`).

Within one CPU class the reference reproduces golden/ byte for byte. On another class its kernels round
differently (the FFT, native or widened bf16, the GEMMs' summation order), so bytes differ while the numbers
stay within the tolerance table. Each file is one of:

- identical: the same bytes;
- within tolerance: every stage within its chained tolerance (the regenerated tensor against the stored one,
  both computed end to end from the audio, like a chained run), every integer tensor (ids, masks) equal;
- beyond tolerance: anything else, including a file only one side has.

The manifest is compared without what is expected to change: the files' sha256 and the CPU it was made on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load

from conformance.harness import golden
from conformance.harness.cases import FULL, MODELS
from conformance.harness.metrics import failures, measure
from conformance.harness.stages import stages
from conformance.harness.tolerances import tolerance

IDENTICAL, WITHIN, BEYOND = "identical", "within tolerance", "beyond tolerance"


@dataclass(frozen=True)
class FileDrift:
    path: str
    verdict: str
    detail: str  # the largest difference, or why it is beyond


def _stable_manifest(data: bytes) -> dict:
    manifest = json.loads(data)
    manifest.get("provenance", {}).pop("cpu", None)
    for entry in golden.all_entries(manifest):
        entry.pop("sha256", None)
    return manifest


def _case_drift(rel: str, stored: bytes, regenerated: bytes, entry: dict) -> FileDrift:
    old, new = load(stored), load(regenerated)
    if old.keys() != new.keys():
        return FileDrift(rel, BEYOND, f"tensors differ: {sorted(old.keys() ^ new.keys())}")
    by_name = {s.name: s for s in stages({**MODELS, FULL.name: FULL}[entry["model"]].config)}
    worst, worst_text, problems = -1.0, "", []
    for name in sorted(old):
        a, b = old[name], new[name]
        if a.shape != b.shape:
            problems.append(f"{name}: shape {tuple(b.shape)}, stored {tuple(a.shape)}")
        elif not a.is_floating_point():
            if not torch.equal(a, b):
                problems.append(f"{name}: {int((a != b).sum())} of {a.numel()} values differ")
        elif name in by_name:
            metrics = measure(b.float(), a.float(), by_name[name].feature_axis)
            tol = tolerance(name, entry["dtype"], "chained")
            problems += [f"{name}: {p}" for p in failures(metrics, tol)]
            # The largest difference, as a fraction of its own limit, says how close this file came.
            share = max(metrics.max_rel / tol.max_rel if tol.max_rel else 0.0, metrics.max_abs / tol.max_abs if tol.max_abs else 0.0)
            if share > worst:
                worst = share
                worst_text = (f"largest: {name} max_abs {metrics.max_abs:.1e} max_rel {metrics.max_rel:.1e} "
                              f"nmse {metrics.nmse:.1e} ({share:.0%} of its limit)")
        elif not torch.equal(a, b):
            problems.append(f"{name}: not a stage and not equal")
    if problems:
        return FileDrift(rel, BEYOND, "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))
    return FileDrift(rel, WITHIN, worst_text)


def drift(root: Path, files: dict[str, bytes], skip: tuple[str, ...] = ()) -> list[FileDrift]:
    """Every file of the stored tree at `root` (but its subfolders `skip`) and of the regenerated `files`, classified."""
    existing = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()
    existing = {rel for rel in existing if rel.split("/")[0] not in skip}
    out = [FileDrift(rel, BEYOND, f"missing from {root}") for rel in sorted(set(files) - existing)]
    out += [FileDrift(rel, BEYOND, "not produced by the regeneration") for rel in sorted(existing - set(files))]
    cases = {entry["path"]: entry for entry in json.loads(files[golden.MANIFEST])["cases"].values()} if golden.MANIFEST in files else {}
    for rel in sorted(set(files) & existing):
        stored = (root / rel).read_bytes()
        if stored == files[rel]:
            out.append(FileDrift(rel, IDENTICAL, ""))
        elif rel == golden.MANIFEST:
            same = _stable_manifest(stored) == _stable_manifest(files[rel])
            out.append(FileDrift(rel, WITHIN if same else BEYOND, "only hashes and the CPU differ" if same else "configs, versions or tolerances differ"))
        elif rel in cases:
            out.append(_case_drift(rel, stored, files[rel], cases[rel]))
        else:
            out.append(FileDrift(rel, BEYOND, "bytes differ"))
    return out
