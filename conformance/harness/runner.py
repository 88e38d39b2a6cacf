"""One harness for every (case x stage x mode x backend): builds our model for a golden case, runs it chained
and isolated, and measures every stage against the stored reference tensors."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from glm_asr import GlmAsrModel, load_model

from conformance.harness import golden
from conformance.harness.cases import MODELS, clips
from conformance.harness.metrics import Metrics, failures, measure
from conformance.harness.ours import run_chained, run_isolated
from conformance.harness.stages import select, stages
from conformance.harness.tolerances import Tolerance, tolerance
from conformance.harness.weights import golden_weights, save_checkpoint, weights_digest

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("chained", "isolated")


@dataclass(frozen=True)
class Row:
    case: str
    mode: str
    stage: str
    shape: tuple[int, ...]
    metrics: Metrics
    tolerance: Tolerance
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


@functools.lru_cache(maxsize=8)
def tiny_model(name: str, dtype: str, device: str, weights_sha256: str) -> GlmAsrModel:
    """Our model with the golden's weights, through the real loader (config.json + safetensors)."""
    tiny = MODELS[name]
    weights = golden_weights(tiny)
    if weights_digest(weights) != weights_sha256:
        raise golden.GoldenError(
            f"weights for {name} made here differ from those golden/ was made with (sha256 mismatch): "
            "conformance/harness/weights.py or numpy's generator changed; regenerate with `tox -e golden`"
        )
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp), tiny.config, weights)
        return load_model(tmp, dtype=DTYPES[dtype], device=device)


def run_case(case_id: str, device: str = "cpu", root: Path = golden.ROOT, manifest: dict | None = None) -> list[Row]:
    """A stored golden case: our model against the reference tensors in golden/."""
    manifest = manifest or golden.load_manifest(root)
    entry = manifest["cases"][case_id]
    name, dtype = entry["model"], entry["dtype"]
    model = tiny_model(name, dtype, device, manifest["models"][name]["weights_sha256"])
    stored = golden.load_case(root, entry)
    full = {s: info["stored_full"] for s, info in entry["stages"].items()}
    return compare_stages(case_id, model, clips(entry["audio"]), stored, full, dtype)


def compare_stages(
    case_id: str, model: GlmAsrModel, audio: list, reference: dict[str, torch.Tensor], full: dict[str, bool], dtype: str
) -> list[Row]:
    """Every stage of our model, chained and isolated, against reference tensors already cut by `select`;
    `reference` also holds the reference processor's tensors as `inputs.*`."""
    device = next(model.parameters()).device
    inputs = {k.removeprefix("inputs."): v for k, v in reference.items() if k.startswith("inputs.")}
    stage_list = stages(model.config)
    chained = run_chained(model, audio, {k: v.to(device) for k, v in inputs.items()})
    mask_ok = torch.equal(chained.pop("input_features_mask").cpu(), inputs["input_features_mask"].to(torch.int32))
    isolated = run_isolated(model, {k: v.to(device) for k, v in reference.items()}, full, stage_list)
    rows = []
    for mode, produced in (("chained", chained), ("isolated", isolated)):
        for stage in stage_list:
            if stage.name not in produced:
                continue
            tol = tolerance(stage.name, dtype, mode)
            ref = reference[stage.name]
            metrics = measure(select(stage, produced[stage.name], inputs), ref, stage.feature_axis)
            problems = failures(metrics, tol)
            if stage.name == "mel" and not mask_ok:
                problems = ["valid-frame mask differs from the reference processor's", *problems]
            rows.append(Row(case_id, mode, stage.name, tuple(ref.shape), metrics, tol, tuple(problems)))
    return rows


def format_table(rows: list[Row]) -> str:
    def limit(t: Tolerance) -> str:
        parts = [f"abs<={t.max_abs:g}" if t.max_abs is not None else "", f"rel<={t.max_rel:g}" if t.max_rel is not None else "",
                 f"nmse<={t.nmse:g}" if t.nmse is not None else "", f"1-cos<={1 - t.min_cos:.0e}" if t.min_cos is not None else ""]
        return " ".join(p for p in parts if p)

    header = (f"{'case':24} {'mode':8} {'stage':17} {'shape':16} {'max abs':>8} {'max rel':>8} {'NMSE':>8} "
              f"{'1-min cos':>9}  {'tolerance':42} verdict")
    lines = [header, "-" * len(header)]
    for r in rows:
        m = r.metrics
        lines.append(
            f"{r.case:24} {r.mode:8} {r.stage:17} {'x'.join(map(str, r.shape)):16} {m.max_abs:8.1e} {m.max_rel:8.1e} "
            f"{m.nmse:8.1e} {1 - m.min_cos:9.1e}  {limit(r.tolerance):42} {'ok' if r.ok else 'FAIL: ' + '; '.join(r.failures)}"
        )
    return "\n".join(lines)
